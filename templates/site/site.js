// Client-side filters for the incident index: our own script (the CSP allows no other), reading only the
// data-* attributes the site generator wrote. Without JavaScript the form stays hidden and every row shows.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var list = document.getElementById("incidents");
  if (!form || !list) { return; }
  var rows = Array.prototype.slice.call(list.querySelectorAll("li.incident"));
  var fields = {
    category: document.getElementById("f-category"),
    country: document.getElementById("f-country"),
    from: document.getElementById("f-from"),
    to: document.getElementById("f-to")
  };
  var count = document.getElementById("f-count");

  function words(s) { return (s || "").split(" ").filter(Boolean); }

  function apply() {
    var cat = fields.category.value, ctry = fields.country.value;
    var from = fields.from.value, to = fields.to.value;
    var shown = 0;
    rows.forEach(function (li) {
      var ok = (!cat || words(li.dataset.categories).indexOf(cat) >= 0) &&
        (!ctry || words(li.dataset.countries).indexOf(ctry) >= 0) &&
        // ISO dates compare as strings; an incident matches when its span overlaps [from, to]
        (!from || li.dataset.last >= from) && (!to || li.dataset.first <= to);
      li.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.value = shown + " of " + rows.length + " shown";
    var state = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { if (fields[k].value) { state.set(k, fields[k].value); } });
    var hash = state.toString();
    // replaceState keeps the filter in the address (shareable) without filling the history
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  // A shared link like index.html#category=prosecution&country=KZ opens filtered.
  var initial = new URLSearchParams(location.hash.replace(/^#/, ""));
  Object.keys(fields).forEach(function (k) {
    var v = initial.get(k);
    if (v === null) { return; }
    if (fields[k].tagName === "SELECT") {
      var known = Array.prototype.some.call(fields[k].options, function (o) { return o.value === v; });
      if (known) { fields[k].value = v; }
    } else if (/^\d{4}-\d{2}-\d{2}$/.test(v)) {
      fields[k].value = v;
    }
  });
  form.addEventListener("change", apply);
  form.addEventListener("input", apply);
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  form.addEventListener("reset", function () { setTimeout(apply, 0); });
  form.hidden = false;
  apply();
}());
