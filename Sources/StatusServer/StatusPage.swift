/// The status page: one tile per port (state, stage, partition, progress, serial, last result
/// and code) and the counts, kept live by server-sent events from `/events`. Self-contained (no
/// external scripts or fonts: factory hosts are often offline). Text from boards (serials) is
/// set with `textContent`, never as HTML.
enum StatusPage {
    static let html = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>stm32mp-flash station</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 1.5rem; background: #f4f5f7; color: #1d2330; }
        h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
        #counts { margin-bottom: 1rem; font-size: 1.05rem; }
        #counts span { margin-right: 1.5rem; }
        #connection[data-state=lost] { color: #b3261e; }
        #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: .8rem; }
        .tile { background: #fff; border-radius: .5rem; padding: .8rem; border-left: .5rem solid #9aa3b2; }
        .tile[data-state=flashing] { border-left-color: #1a73e8; }
        .tile[data-state=done] { border-left-color: #188038; }
        .tile[data-state=failed] { border-left-color: #d93025; }
        .port { font-weight: 600; font-size: 1.1rem; }
        .state { float: right; text-transform: uppercase; font-size: .8rem; }
        .row { font-size: .85rem; margin-top: .25rem; overflow-wrap: anywhere; }
        progress { width: 100%; }
        </style>
        </head>
        <body data-updates="0">
        <h1>stm32mp-flash station</h1>
        <div id="counts"><span>Done: <b id="done">0</b></span><span>Failed: <b id="failed">0</b></span>\
        <span>Flashing: <b id="flashing">0</b></span><span id="connection" data-state="connecting">connecting…</span></div>
        <div id="tiles"></div>
        <script>
        "use strict";
        const tiles = document.getElementById("tiles");
        function numbers(port) { return port.split(/[-.]/).map(Number); }
        function before(a, b) {
          const x = numbers(a), y = numbers(b);
          for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] < y[i];
          return x.length < y.length;
        }
        function line(parent, cls, text) {
          const div = document.createElement("div");
          div.className = cls;
          div.textContent = text;
          parent.appendChild(div);
          return div;
        }
        function render(t) {
          let el = document.getElementById("tile-" + t.port);
          if (!el) {
            el = document.createElement("section");
            el.id = "tile-" + t.port;
            el.className = "tile";
            el.dataset.port = t.port;
            const next = Array.from(tiles.children).find(c => before(t.port, c.dataset.port));
            tiles.insertBefore(el, next || null);
          }
          el.dataset.state = t.state;
          el.replaceChildren();
          const head = line(el, "port", t.port);
          line(head, "state", t.state);
          line(el, "row serial", "serial " + (t.serial || "–"));
          line(el, "row stage", "stage " + (t.stage || "–"));
          line(el, "row partition", "partition " + (t.partition || "–"));
          const percent = t.total > 0 ? Math.floor(100 * t.sent / t.total) : 0;
          const bar = document.createElement("progress");
          bar.max = 100;
          bar.value = percent;
          el.appendChild(bar);
          el.dataset.progress = String(percent);
          line(el, "row last", "last " + (t.lastResult || "–") + (t.lastCode ? " (" + t.lastCode + ")" : ""));
          line(el, "row runs", "done " + t.done + ", failed " + t.failed);
        }
        function counts(c) {
          document.getElementById("done").textContent = c.done;
          document.getElementById("failed").textContent = c.failed;
          document.getElementById("flashing").textContent = c.flashing;
          document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
          // The tab's title says it too (a glance from another tab; a headless browser test reads it).
          document.title = c.done + " done, " + c.failed + " failed, " + c.flashing + " flashing, " +
            tiles.children.length + " ports · stm32mp-flash station";
        }
        const events = new EventSource("/events");
        const connection = document.getElementById("connection");
        events.onopen = () => { connection.dataset.state = "live"; connection.textContent = "live"; };
        events.onerror = () => { connection.dataset.state = "lost"; connection.textContent = "reconnecting…"; };
        events.addEventListener("snapshot", e => {
          const s = JSON.parse(e.data);
          tiles.replaceChildren();
          s.tiles.forEach(render);
          counts(s);
        });
        events.addEventListener("tile", e => {
          const u = JSON.parse(e.data);
          render(u.tile);
          counts(u);
        });
        </script>
        </body>
        </html>
        """
}
