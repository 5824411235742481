"""The page of ``report.html``: its styles and its script (no network, no library).

``PAGE_TEMPLATE`` is a ``string.Template``: ``$title``, ``$summary``, ``$classes`` (HTML),
``$figures`` (HTML), ``$count`` and ``$data`` (the gallery as JSON: ``settings`` and ``rows``).

The script shows ``settings.pageSize`` rows of the gallery at a time (thumbnails load lazily),
sorted by ``settings.sortKey`` ascending, worst first; clicking a column header (the image name
or a number) sorts by it (again: the other way), rows without a value always last; the class filter keeps the rows whose
class maps show that class. The table's ``data-sort`` / ``data-order`` attributes and
``#page-info`` say what is shown.
"""

from __future__ import annotations

from string import Template

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.4em 0.8em; min-width: 6em; text-align: center; }
.card .value { font-size: 1.4em; font-weight: 600; } .card .name { font-size: 0.8em; color: #555; }
.note { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; max-height: 300px; border: 1px solid #ddd; }
#gallery th[data-key] { cursor: pointer; user-select: none; }
#gallery th[data-key]:hover { background: #f0f0f0; }
#gallery td.pictures img { display: block; }
.panels { display: flex; gap: 2px; font-size: 0.75em; color: #555; }
.controls { margin: 0.6em 0; display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }
"""

_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var settings = data.settings, rows = data.rows;
  var state = {key: settings.sortKey, ascending: true, page: 0, classId: -1};
  var table = document.getElementById("gallery");
  var body = table.querySelector("tbody");

  function percent(value) { return value === null || value === undefined ? "-" : (100 * value).toFixed(1); }
  function shown() {
    var kept = rows.filter(function (row) { return state.classId < 0 || row.classes.indexOf(state.classId) >= 0; });
    var key = state.key, sign = state.ascending ? 1 : -1;
    return kept.map(function (row, index) { return [row, index]; }).sort(function (a, b) {
      var x = a[0][key], y = b[0][key];
      var xMissing = x === null || x === undefined, yMissing = y === null || y === undefined;
      if (xMissing || yMissing) { return xMissing === yMissing ? a[1] - b[1] : (xMissing ? 1 : -1); }
      if (x < y) { return -sign; } if (x > y) { return sign; }
      return a[1] - b[1];
    }).map(function (pair) { return pair[0]; });
  }
  function cell(tr, text, className) {
    var td = document.createElement("td"); td.textContent = text;
    if (className) { td.className = className; } tr.appendChild(td); return td;
  }
  function render() {
    var list = shown(), size = settings.pageSize;
    var pages = Math.max(1, Math.ceil(list.length / size));
    state.page = Math.min(state.page, pages - 1);
    var first = state.page * size, part = list.slice(first, first + size);
    body.textContent = "";
    part.forEach(function (row, offset) {
      var tr = document.createElement("tr");
      cell(tr, String(first + offset + 1), "num");
      cell(tr, row.name, "name");
      var td = cell(tr, "", "pictures"), img = document.createElement("img");
      img.src = row.thumb; img.loading = "lazy"; img.width = row.width; img.height = row.height;
      img.alt = row.name; td.appendChild(img);
      settings.columns.forEach(function (column) {
        var value = row[column.key];
        cell(tr, column.kind === "percent" ? percent(value) : (value === null ? "-" : String(value)), "num");
      });
      body.appendChild(tr);
    });
    table.setAttribute("data-sort", state.key);
    table.setAttribute("data-order", state.ascending ? "ascending" : "descending");
    document.getElementById("page-info").textContent = "page " + (state.page + 1) + " of " + pages +
      " (" + list.length + " images)";
    document.getElementById("previous-page").disabled = state.page === 0;
    document.getElementById("next-page").disabled = state.page >= pages - 1;
    table.querySelectorAll("th[data-key]").forEach(function (th) {
      var mark = th.getAttribute("data-key") === state.key ? (state.ascending ? " \u25b2" : " \u25bc") : "";
      th.textContent = th.getAttribute("data-title") + mark;
    });
  }
  var headRow = table.querySelector("thead tr");
  settings.columns.forEach(function (column) {
    var th = document.createElement("th");
    th.setAttribute("data-key", column.key); th.setAttribute("data-title", column.title);
    headRow.appendChild(th);
  });
  table.querySelectorAll("th[data-key]").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      if (state.key === key) { state.ascending = !state.ascending; }
      else { state.key = key; state.ascending = true; }
      state.page = 0; render();
    });
  });
  var panels = document.getElementById("panel-titles");
  settings.panels.forEach(function (title) {
    var span = document.createElement("span"); span.textContent = title;
    span.style.width = (rows.length ? (rows[0].width - 2 * (settings.panels.length - 1)) / settings.panels.length : 96) + "px";
    panels.appendChild(span);
  });
  var filter = document.getElementById("class-filter");
  settings.classNames.forEach(function (name, index) {
    var option = document.createElement("option"); option.value = String(index); option.textContent = name;
    filter.appendChild(option);
  });
  filter.addEventListener("change", function () { state.classId = Number(filter.value); state.page = 0; render(); });
  document.getElementById("previous-page").addEventListener("click", function () { state.page -= 1; render(); });
  document.getElementById("next-page").addEventListener("click", function () { state.page += 1; render(); });
  render();
})();
"""

PAGE_TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>""" + _STYLE + """</style>
</head>
<body>
<h1>$title</h1>
<h2>Summary</h2>
$summary
<h2>Per class</h2>
$classes
<h2>Charts</h2>
$figures
<h2>Images</h2>
<p class="note">$count images, worst first; click a column to sort by it, again to reverse.</p>
<div class="controls">
<label>class <select id="class-filter"><option value="-1">all classes</option></select></label>
<button id="previous-page">previous</button><span id="page-info"></span><button id="next-page">next</button>
</div>
<table id="gallery">
<thead><tr><th>#</th><th data-key="name" data-title="image">image</th>
<th><div class="panels" id="panel-titles"></div></th></tr></thead>
<tbody></tbody>
</table>
<script type="application/json" id="gallery-data">$data</script>
<script>""" + _SCRIPT + """</script>
</body>
</html>
""")
