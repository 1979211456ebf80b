// Sortable tables, the edit-count ladder and the metrics toggle: no libraries, no network, works
// from file://. Without scripts the page shows every row and column; this script narrows it to the
// final edit count and the headline columns, and gives the controls to widen it again.
(function () {
  "use strict";
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  function sortKey(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (raw === "" || raw === "–") { return null; }
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
    // a row marked "error-row" (a method's error message) travels with the row above it
    var groups = [];
    each(body.rows, function (row) {
      if (row.classList.contains("error-row") && groups.length) {
        groups[groups.length - 1].rows.push(row);
      } else {
        groups.push({ rows: [row], key: sortKey(row.cells[column]), index: groups.length });
      }
    });
    groups.sort(function (x, y) {
      if (x.key === null || y.key === null) {
        return x.key === y.key ? x.index - y.index : (x.key === null ? 1 : -1);
      }
      var order = compare(x.key, y.key);
      return (ascending ? order : -order) || x.index - y.index;
    });
    groups.forEach(function (group) {
      group.rows.forEach(function (row) { body.appendChild(row); });
    });
    each(header.parentNode.cells, function (cell) {
      cell.setAttribute("aria-sort", cell === header ? (ascending ? "ascending" : "descending") : "none");
    });
    table.classList.add("sorted");
  }
  // every table with a header row sorts by any of its columns
  each(document.querySelectorAll("table"), function (table) {
    if (!table.tHead || !table.tBodies.length || table.hasAttribute("data-nosort")) { return; }
    var headers = table.tHead.rows[table.tHead.rows.length - 1];
    each(headers.cells, function (header, column) {
      var button = header.querySelector("button");
      if (!button) {
        button = document.createElement("button");
        button.type = "button";
        while (header.firstChild) { button.appendChild(header.firstChild); }
        header.appendChild(button);
        header.setAttribute("aria-sort", "none");
      }
      button.addEventListener("click", function () { sortTable(table, column, header); });
    });
    table.classList.add("sortable");
  });
  // a board: the ladder picks the edit count shown, the toggle the columns beyond the headline
  each(document.querySelectorAll(".board-block"), function (block) {
    var table = document.getElementById(block.getAttribute("data-table"));
    var controls = block.querySelector(".controls");
    if (!table || !controls) { return; }
    var ladder = controls.querySelector(".ladder");
    var toggle = controls.querySelector(".show-extra");
    function show(wanted) {
      each(ladder.querySelectorAll("button"), function (b) {
        b.setAttribute("aria-pressed", String(b.getAttribute("data-edits") === wanted));
      });
      each(table.tBodies[0].rows, function (row) {
        row.hidden = wanted !== "" && row.getAttribute("data-edits") !== wanted;
      });
      var chips = block.querySelectorAll(".winners");
      var last = chips.length ? chips[chips.length - 1].getAttribute("data-edits") : "";
      each(chips, function (line) {
        line.hidden = line.getAttribute("data-edits") !== (wanted === "" ? last : wanted);
      });
      block.setAttribute("data-shown", wanted);
    }
    ladder.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (button) { show(button.getAttribute("data-edits")); }
    });
    if (toggle) {
      toggle.addEventListener("change", function () {
        block.classList.toggle("compact", !toggle.checked);
      });
    }
    var pressed = ladder.querySelector("button[aria-pressed=true]");
    show(pressed ? pressed.getAttribute("data-edits") : "");
    block.classList.add("compact");
    controls.hidden = false;
  });
}());
