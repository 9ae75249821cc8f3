// ua-server console: live file list on the project page (polls files.json every 2 s).
(function () {
  "use strict";
  var table = document.getElementById("files");
  if (!table || !table.dataset.poll) return;
  var body = document.getElementById("files-body");
  var live = document.getElementById("live");
  var counts = document.getElementById("counts");

  function cell(tr, cls, text, title) {
    var td = document.createElement("td");
    td.className = cls;
    if (title) td.title = title;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function render(data) {
    var rows = document.createDocumentFragment();
    data.files.forEach(function (f) {
      var tr = document.createElement("tr");
      tr.dataset.file = f.id; tr.dataset.name = f.name; tr.dataset.state = f.state;
      var a = document.createElement("a");
      a.href = f.href; a.textContent = f.name;
      var name = cell(tr, "name", a);
      if (f.hidden) {
        var b = document.createElement("span"); b.className = "badge"; b.textContent = "hidden";
        name.appendChild(document.createTextNode(" ")); name.appendChild(b);
      }
      var st = document.createElement("span");
      st.className = "state-badge state-" + f.state; st.textContent = f.state;
      cell(tr, "state", st);
      cell(tr, "size num", f.size_h, f.size + " bytes");
      cell(tr, "parts num", f.parts_complete + "/" + f.parts_total);
      cell(tr, "by", f.created_by);
      cell(tr, "created", f.created);
      rows.appendChild(tr);
    });
    if (!data.files.length) {
      var tr = document.createElement("tr"); tr.className = "empty";
      var td = cell(tr, "muted", "No files in this folder yet."); td.colSpan = 6;
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    var c = data.counts;
    counts.textContent = data.files.length + " file(s): " + c.open + " open, " + c.closing +
      " closing, " + c.closed + " closed · updated " + data.now;
    live.classList.remove("stale");
  }

  function tick() {
    fetch(table.dataset.poll, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function () { live.classList.add("stale"); })
      .finally(function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 2000);
})();
