// Sortable tables and the edit-count filter: no libraries, no network, works from file://.
(function () {
  "use strict";
  function sortKey(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (raw === "") { return null; }
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }
  function sortTable(table, column, header) {
    var body = table.tBodies[0];
    var first = header.getAttribute("data-first") || "asc";
    var current = header.getAttribute("aria-sort");
    var ascending = current === "none" || current === null ? first === "asc" : current !== "ascending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return { row: row, key: sortKey(row.cells[column]), index: index };
    });
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) {
        return x.key === y.key ? x.index - y.index : (x.key === null ? 1 : -1);
      }
      var order = compare(x.key, y.key);
      return (ascending ? order : -order) || x.index - y.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.setAttribute("aria-sort", cell === header ? (ascending ? "ascending" : "descending") : "none");
    });
    table.classList.add("sorted");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () { sortTable(table, column, header); });
      }
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll(".filter"), function (bar) {
    var table = document.getElementById(bar.getAttribute("data-table"));
    if (!table) { return; }
    bar.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button) { return; }
      var wanted = button.getAttribute("data-edits");
      Array.prototype.forEach.call(bar.querySelectorAll("button"), function (b) {
        b.classList.toggle("on", b === button);
      });
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = wanted !== "" && row.getAttribute("data-edits") !== wanted;
      });
    });
  });
}());
