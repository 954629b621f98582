"""Our template environment prints every value as stock Jinja with autoescape does (it skips some of
markupsafe's work for str, int and Markup), so a template of ours never shows feed text unescaped."""

from __future__ import annotations

import jinja2
import pytest
from markupsafe import Markup

from monitor.deliver.render import environment
from monitor.sanitize import SanitizedHtml


class _Html:
    def __html__(self) -> str:
        return "<b>own</b>"


class _Str(str):
    pass


VALUES = [
    "<script>alert(\"x\")</script> & 'q'",
    "Задержан журналист <Айгуль> & «Ақ жол»",
    "",
    0,
    -42,
    10**30,
    True,
    None,
    3.5,
    Markup("<em>kept</em>"),
    SanitizedHtml("<p>clean & <b>shown</b> escaped</p>"),
    _Str("<sub>"),
    _Html(),
    ["<a>", 1],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_printed_values_are_escaped_as_stock_jinja_escapes_them(value: object) -> None:
    source = "<p title='{{ v }}'>{{ v }}|{{ v or 'none' }}|{% for x in [v] %}{{ x }}{% endfor %}</p>"
    stock = jinja2.Environment(autoescape=True).from_string(source).render(v=value)
    ours = environment().from_string(source).render(v=value)
    assert ours == stock
    if isinstance(value, str) and not isinstance(value, Markup) and "<" in value:
        assert "<" not in ours[ours.index(">") + 1 : ours.rindex("</p>")]  # feed text never as markup
