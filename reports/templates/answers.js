// The run page's answer browser: filters the stored answers by method, edit count, metric and
// verdict. Every string goes in through textContent, never as markup; no network, works from file://.
(function () {
  "use strict";
  var holder = document.getElementById("answers-data");
  var table = document.getElementById("answers-table");
  if (!holder || !table) { return; }
  var data = JSON.parse(holder.textContent);
  var SHOWN = 200;
  var bar = document.getElementById("answers-filter");
  var count = document.getElementById("answers-count");
  var body = table.tBodies[0];
  function select(name) { return bar.querySelector("select[data-filter='" + name + "']"); }
  function fill(element, options) {
    while (element.options.length) { element.remove(0); }
    options.forEach(function (option) {
      var item = document.createElement("option");
      item.value = option[0];
      item.textContent = option[1];
      element.appendChild(item);
    });
  }
  var methods = select("method");
  var edits = select("edits");
  var metric = select("metric");
  var verdict = select("verdict");
  fill(methods, [["", "all"]].concat(data.methods.map(function (m, i) { return [String(i), m]; })));
  var kinds = [];
  data.rows.forEach(function (row) {
    var kind = data.prompts[row[2]][2];
    if (kinds.indexOf(kind) < 0) { kinds.push(kind); }
  });
  kinds.sort();
  fill(metric, [["", "all"]].concat(kinds.map(function (k) {
    return [String(k), data.metrics[k] + " (" + data.kinds[k] + " prompts)"];
  })));
  function fillEdits() {
    var wanted = methods.value;
    var counts = [];
    data.rows.forEach(function (row) {
      if ((wanted === "" || String(row[0]) === wanted) && counts.indexOf(row[1]) < 0) {
        counts.push(row[1]);
      }
    });
    counts.sort(function (a, b) { return a - b; });
    var before = edits.value;
    fill(edits, [["", "all"]].concat(counts.map(function (n) { return [String(n), String(n)]; })));
    if (counts.indexOf(Number(before)) >= 0) { edits.value = before; }
  }
  function keep(row) {
    var prompt = data.prompts[row[2]];
    var gen = row[4] === 1;
    var tf = row[5] === 1;
    var rule = verdict.value;
    return (methods.value === "" || String(row[0]) === methods.value)
      && (edits.value === "" || String(row[1]) === edits.value)
      && (metric.value === "" || String(prompt[2]) === metric.value)
      && (rule === "" || (rule === "gen-fail" && !gen) || (rule === "gen-pass" && gen)
        || (rule === "tf-fail" && !tf) || (rule === "tf-pass" && tf)
        || (rule === "mirage" && tf && !gen));
  }
  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
  }
  function render() {
    var matching = data.rows.filter(keep);
    while (body.rows.length) { body.deleteRow(0); }
    matching.slice(0, SHOWN).forEach(function (row) {
      var prompt = data.prompts[row[2]];
      var tr = document.createElement("tr");
      var gen = row[4] === 1 ? "pass" : "fail";
      var tf = row[5] === 1 ? "pass" : "fail";
      tr.setAttribute("data-method", data.methods[row[0]]);
      tr.setAttribute("data-edits", String(row[1]));
      tr.setAttribute("data-kind", data.kinds[prompt[2]]);
      tr.setAttribute("data-gen", gen);
      tr.setAttribute("data-tf", tf);
      cell(tr, data.methods[row[0]]);
      cell(tr, String(row[1]), "num");
      cell(tr, String(prompt[0]), "num");
      cell(tr, data.texts[prompt[1]]);
      cell(tr, data.texts[prompt[4]]);
      cell(tr, data.kinds[prompt[2]] + (prompt[2] === 0 ? "" : " " + (prompt[3] + 1)));
      cell(tr, data.texts[row[3]]);
      cell(tr, data.texts[prompt[5]]);
      cell(tr, data.texts[prompt[6]]);
      cell(tr, gen, "verdict " + gen);
      cell(tr, tf, "verdict " + tf);
      body.appendChild(tr);
    });
    count.textContent = matching.length + " of " + data.rows.length + " answers match"
      + (matching.length > SHOWN ? " (the first " + SHOWN + " shown; narrow the filters)" : "");
  }
  methods.addEventListener("change", function () { fillEdits(); render(); });
  [edits, metric, verdict].forEach(function (element) {
    element.addEventListener("change", render);
  });
  fillEdits();
  render();
}());
