"""What the user reads: digests (email and pages), the static site, Atom feeds and JSON/CSV exports.

    render.environment(user_dir)   the Jinja2 environment every template goes through (autoescaped)
    site.build_site(...)           `monitor site build --out DIR`
    atom.items_atom / incidents_atom, exports.*   machine-readable outputs

Everything here shows feed content, which is untrusted: HTML only through monitor.sanitize.sanitize_html,
everything else escaped by the templates.
"""
