// Keyboard triage for the workspace list: j/k move, c/r confirm or reject the marked category of the
// focused item, Enter opens it, / goes to the search box. Our own file only (the CSP allows nothing else).
// Without JavaScript every button still works as a plain form; with it, a verdict updates the row in place.
(function () {
  "use strict";
  var list = document.getElementById("items");
  var search = document.getElementById("q");
  var rows = list ? Array.prototype.slice.call(list.querySelectorAll("li.item")) : [];
  var current = -1;

  function focusRow(i) {
    if (!rows.length) { return; }
    i = Math.max(0, Math.min(rows.length - 1, i));
    if (current >= 0 && rows[current]) { rows[current].classList.remove("focused"); }
    current = i;
    var row = rows[current];
    row.classList.add("focused");
    row.scrollIntoView({ block: "nearest" });
    var link = row.querySelector("a.title");
    if (link) { link.focus({ preventScroll: true }); }
  }

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }

  function send(form, row) {
    var body = new URLSearchParams(new FormData(form));
    return fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (resp) {
      return resp.json().then(function (data) { return { status: resp.status, data: data }; });
    }).then(function (r) {
      if (r.status === 401) { window.location.href = form.action.replace(/\/items\/.*$/, "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search)); return; }
      if (!r.data.ok) { window.alert(r.data.error || "The verdict was not saved."); return; }
      var chips = row.querySelector("[data-chips]");
      if (chips) { chips.innerHTML = r.data.chips_html; }  // server-rendered and escaped
      row.setAttribute("data-verdict", r.data.verdict);
      Array.prototype.forEach.call(row.querySelectorAll("form[data-verdict]"), function (f) {
        var b = f.querySelector("button");
        if (b) { b.disabled = f.getAttribute("data-verdict") === r.data.verdict; }
      });
    });
  }

  function verdict(kind) {
    if (current < 0 || !rows[current]) { return; }
    var row = rows[current];
    var form = row.querySelector('form[data-verdict="' + kind + '"]');
    if (!form) { return; }  // not logged in, or no category to judge
    send(form, row).then(function () { focusRow(current + 1); });
  }

  rows.forEach(function (row, i) {
    Array.prototype.forEach.call(row.querySelectorAll("form[data-verdict]"), function (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        focusRow(i);
        send(form, row);
      });
    });
    row.addEventListener("click", function (ev) {
      if (ev.target.closest("a, button, input, select")) { return; }
      focusRow(i);
    });
  });

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (typing(document.activeElement)) {
      if (ev.key === "Escape") { document.activeElement.blur(); }
      return;
    }
    switch (ev.key) {
      case "j": focusRow(current + 1); break;
      case "k": focusRow(current < 0 ? 0 : current - 1); break;
      case "c": verdict("confirm"); break;
      case "r": verdict("reject"); break;
      case "Enter":
        if (current >= 0) { var a = rows[current].querySelector("a.title"); if (a) { window.location.href = a.href; } }
        break;
      case "/":
        if (search) { search.focus(); search.select(); } else { return; }
        break;
      default: return;
    }
    ev.preventDefault();
  });

  // Back from a verdict posted without script (#item-12): keep the place in the list.
  if (window.location.hash.indexOf("#item-") === 0) {
    var at = rows.findIndex(function (r) { return "#" + r.id === window.location.hash; });
    if (at >= 0) { focusRow(at); }
  }
})();
