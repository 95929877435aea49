import NIOHTTP1

/// The built-in dashboard at `/ui`: one self-contained page (no external scripts, styles
/// or fonts; its content security policy forbids them) that polls this node's own API
/// and draws the members and their states, the layout as a grid of partitions coloured
/// by their first replica, the transfers of a layout change with their progress, and
/// this node's request rates and latencies from `/metrics`.
///
/// The page holds no data, so it is served without a token; the API calls it makes
/// need one when access control is on, and it asks for one (kept for the browser tab
/// only) when the node answers 401.
enum Dashboard {
    static func response() -> HTTPResponse {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/html; charset=utf-8")
        headers.add(
            name: "content-security-policy",
            value:
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        headers.add(name: "x-content-type-options", value: "nosniff")
        headers.add(name: "cache-control", value: "no-store")
        return HTTPResponse(status: .ok, headers: headers, body: .bytes(page))
    }

    static let page = Array(
        #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>kv dashboard</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d232b; background: #f4f6f8; }
        header { background: #1d232b; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
        header h1 { font-size: 18px; margin: 0; }
        header span { opacity: .85; }
        main { padding: 12px 20px; display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; }
        section { background: #fff; border-radius: 6px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); overflow-x: auto; }
        h2 { font-size: 15px; margin: 0 0 8px; }
        table { border-collapse: collapse; width: 100%; }
        th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #e6e9ed; white-space: nowrap; }
        th { font-weight: 600; color: #59636e; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        .state { padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff; }
        .state-self, .state-up { background: #2e8540; }
        .state-suspect, .state-joining, .state-leaving { background: #c77c02; }
        .state-down, .state-left { background: #c0392b; }
        #grid { display: grid; grid-template-columns: repeat(32, 1fr); gap: 2px; }
        .partition { aspect-ratio: 1; border-radius: 2px; }
        .partition.moving { outline: 2px solid #1d232b; }
        .legend { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 8px; font-size: 12px; }
        .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
        .bar { background: #e6e9ed; border-radius: 3px; height: 8px; width: 120px; }
        .bar > div { background: #2e6fd1; height: 8px; border-radius: 3px; }
        #problem { color: #c0392b; }
        #login { display: none; gap: 8px; align-items: center; }
        canvas { width: 100%; height: 80px; }
        .muted { color: #59636e; }
        </style>
        </head>
        <body>
        <header>
          <h1>kv</h1>
          <span>node <b id="node">…</b></span>
          <span>cluster <b id="cluster">…</b></span>
          <span>layout version <b id="layout-version">…</b></span>
          <span id="updated" class="muted"></span>
          <span id="problem"></span>
          <form id="login"><input id="token" type="password" placeholder="token" size="40"><button>Use token</button></form>
        </header>
        <main>
          <section>
            <h2>Members</h2>
            <table id="members"><thead><tr><th>node</th><th>state</th><th>HTTP</th><th>zone</th>
              <th class="num">capacity</th><th class="num">replicas</th><th class="num">primaries</th><th class="num">incarnation</th></tr></thead>
              <tbody></tbody></table>
          </section>
          <section>
            <h2>Layout <span id="partition-count" class="muted"></span></h2>
            <div id="grid"></div>
            <div id="legend" class="legend"></div>
          </section>
          <section>
            <h2>Transfers <span id="transfer-summary" class="muted"></span></h2>
            <table id="transfers"><thead><tr><th class="num">partition</th><th>to</th><th>from</th><th>state</th>
              <th>progress</th><th class="num">rate</th><th class="num">ETA</th></tr></thead><tbody></tbody></table>
          </section>
          <section>
            <h2>Requests on this node</h2>
            <canvas id="chart" width="600" height="80"></canvas>
            <table id="rates"><thead><tr><th>operation</th><th class="num">per second</th><th class="num">p50</th>
              <th class="num">p99</th><th class="num">errors/s</th></tr></thead><tbody></tbody></table>
          </section>
        </main>
        <script>
        "use strict";
        const colors = ["#2e6fd1", "#e07b39", "#2e8540", "#8e44ad", "#c0392b", "#16a085", "#d4ac0d", "#7f8c8d",
                        "#1abc9c", "#e84393", "#6c5ce7", "#00b894", "#fd79a8", "#0984e3", "#b33939", "#218c74"];
        const dataOperations = ["get", "head", "put", "delete", "scan", "batch", "counter"];
        let token = sessionStorage.getItem("kv-token") || "";
        let previous = null;
        const history = [];
        let layout = null;
        let memberColors = {};

        function text(value) { return document.createTextNode(String(value)); }
        function cell(row, value, className) {
          const td = document.createElement("td");
          if (className) td.className = className;
          if (value instanceof Node) td.appendChild(value); else td.appendChild(text(value));
          row.appendChild(td);
        }
        function short(id) { return id ? id.slice(0, 8) : ""; }
        function duration(seconds) {
          if (!isFinite(seconds)) return "–";
          if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " µs";
          if (seconds < 1) return (seconds * 1e3).toFixed(1) + " ms";
          return seconds.toFixed(2) + " s";
        }
        function bytes(count) {
          const units = ["B", "KiB", "MiB", "GiB"];
          let value = count, unit = 0;
          while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
          return value.toFixed(unit ? 1 : 0) + " " + units[unit];
        }

        async function api(path, asText) {
          const headers = token ? { "Authorization": "Bearer " + token } : {};
          const response = await fetch(path, { headers, cache: "no-store" });
          if (response.status === 401 || response.status === 403) {
            document.getElementById("login").style.display = "flex";
            throw new Error(response.status === 401 ? "this node requires a token" : "the token may not read the cluster (*:read)");
          }
          if (!response.ok) throw new Error(path + " answered " + response.status);
          return asText ? response.text() : response.json();
        }

        function showMembers(status) {
          document.getElementById("node").textContent = short(status.node_id);
          document.getElementById("cluster").textContent = status.cluster_id || "not formed";
          document.getElementById("layout-version").textContent = status.layout_version;
          const body = document.querySelector("#members tbody");
          body.replaceChildren();
          status.members.forEach((member, index) => {
            if (!(member.node_id in memberColors)) memberColors[member.node_id] = colors[Object.keys(memberColors).length % colors.length];
            const row = document.createElement("tr");
            row.dataset.node = member.node_id;
            row.dataset.state = member.state;
            const swatch = document.createElement("span");
            swatch.className = "swatch";
            swatch.style.background = memberColors[member.node_id];
            const name = document.createElement("span");
            name.append(swatch, text(short(member.node_id)));
            name.title = member.node_id;
            cell(row, name);
            const state = document.createElement("span");
            state.className = "state state-" + member.state;
            state.textContent = member.state;
            cell(row, state);
            cell(row, member.http_address);
            cell(row, member.zone);
            cell(row, member.capacity, "num");
            cell(row, member.replicas, "num");
            cell(row, member.primaries, "num");
            cell(row, member.incarnation, "num");
            body.appendChild(row);
          });
        }

        function showLayout(transfers) {
          if (!layout) return;
          const grid = document.getElementById("grid");
          const moving = new Set((transfers && transfers.transfers || []).filter(t => t.state !== "done").map(t => t.partition));
          document.getElementById("partition-count").textContent =
            "(" + layout.partitions.length + " partitions, " + layout.replication_factor + " replicas each; colour: first replica)";
          grid.replaceChildren();
          layout.partitions.forEach((replicas, partition) => {
            const square = document.createElement("div");
            square.className = "partition" + (moving.has(partition) ? " moving" : "");
            square.dataset.partition = partition;
            square.dataset.owner = replicas[0] || "";
            square.style.background = memberColors[replicas[0]] || "#ccc";
            square.title = "partition " + partition + ": " + replicas.map(short).join(", ");
            grid.appendChild(square);
          });
          const legend = document.getElementById("legend");
          legend.replaceChildren();
          const counts = {};
          layout.partitions.forEach(replicas => { counts[replicas[0]] = (counts[replicas[0]] || 0) + 1; });
          Object.keys(counts).sort().forEach(node => {
            const item = document.createElement("span");
            const swatch = document.createElement("span");
            swatch.className = "swatch";
            swatch.style.background = memberColors[node] || "#ccc";
            item.append(swatch, text(short(node) + ": " + counts[node]));
            legend.appendChild(item);
          });
        }

        function showTransfers(report) {
          const body = document.querySelector("#transfers tbody");
          body.replaceChildren();
          const summary = document.getElementById("transfer-summary");
          summary.textContent = report.in_progress
            ? (report.paused ? "paused · " : "") + report.received + " of " + report.total + " received, layout " + report.layout_version
            : "none in progress";
          for (const transfer of report.transfers || []) {
            const row = document.createElement("tr");
            row.dataset.state = transfer.state;
            cell(row, transfer.partition, "num");
            cell(row, short(transfer.destination));
            cell(row, short(transfer.source || ""));
            cell(row, transfer.state);
            const bar = document.createElement("div");
            bar.className = "bar";
            const fill = document.createElement("div");
            const expected = Math.max(transfer.estimated_rows || 0, transfer.rows || 0, 1);
            fill.style.width = (transfer.state === "done" ? 100 : Math.min(100, 100 * (transfer.rows || 0) / expected)) + "%";
            bar.appendChild(fill);
            cell(row, bar);
            cell(row, bytes(transfer.bytes_per_second || 0) + "/s", "num");
            cell(row, transfer.eta_seconds == null ? "–" : transfer.eta_seconds + " s", "num");
            body.appendChild(row);
          }
        }

        function parseMetrics(textBody) {
          const requests = {}, errors = {}, buckets = {};
          for (const line of textBody.split("\n")) {
            if (!line || line[0] === "#") continue;
            const match = /^([a-z_]+)\{([^}]*)\} ([0-9.e+-]+|\+Inf)$/.exec(line);
            if (!match) continue;
            const labels = {};
            for (const pair of match[2].match(/[a-z_]+="[^"]*"/g) || []) {
              const at = pair.indexOf("=");
              labels[pair.slice(0, at)] = pair.slice(at + 2, -1);
            }
            const value = Number(match[3]);
            if (match[1] === "kv_http_requests_total") {
              requests[labels.operation] = (requests[labels.operation] || 0) + value;
              if (Number(labels.status) >= 500) errors[labels.operation] = (errors[labels.operation] || 0) + value;
            } else if (match[1] === "kv_http_request_duration_seconds_bucket") {
              (buckets[labels.operation] = buckets[labels.operation] || []).push([labels.le === "+Inf" ? Infinity : Number(labels.le), value]);
            }
          }
          return { at: performance.now(), requests, errors, buckets };
        }

        function quantile(now, before, q) {
          if (!now) return NaN;
          const counts = now.map(([le, value], index) => [le, value - (before && before[index] ? before[index][1] : 0)]);
          const total = counts.length ? counts[counts.length - 1][1] : 0;
          if (total <= 0) return NaN;
          const rank = q * total;
          let lower = 0, below = 0;
          for (const [le, count] of counts) {
            if (count >= rank) {
              if (!isFinite(le)) return lower;
              return lower + (le - lower) * (count - below > 0 ? (rank - below) / (count - below) : 1);
            }
            lower = le; below = count;
          }
          return lower;
        }

        function showRates(sample) {
          if (previous) {
            const seconds = (sample.at - previous.at) / 1000;
            const body = document.querySelector("#rates tbody");
            body.replaceChildren();
            let total = 0;
            for (const operation of dataOperations) {
              const rate = ((sample.requests[operation] || 0) - (previous.requests[operation] || 0)) / seconds;
              const failures = ((sample.errors[operation] || 0) - (previous.errors[operation] || 0)) / seconds;
              total += rate;
              if (!(operation in sample.requests)) continue;
              const row = document.createElement("tr");
              row.dataset.operation = operation;
              cell(row, operation);
              cell(row, rate.toFixed(1), "num");
              cell(row, duration(quantile(sample.buckets[operation], previous.buckets[operation], 0.5)), "num");
              cell(row, duration(quantile(sample.buckets[operation], previous.buckets[operation], 0.99)), "num");
              cell(row, failures.toFixed(1), "num");
              body.appendChild(row);
            }
            history.push(total);
            if (history.length > 120) history.shift();
            drawChart();
          }
          previous = sample;
        }

        function drawChart() {
          const canvas = document.getElementById("chart");
          const context = canvas.getContext("2d");
          context.clearRect(0, 0, canvas.width, canvas.height);
          const top = Math.max(1, ...history);
          context.strokeStyle = "#2e6fd1";
          context.lineWidth = 2;
          context.beginPath();
          history.forEach((value, index) => {
            const x = canvas.width - (history.length - 1 - index) * (canvas.width / 119);
            const y = canvas.height - 4 - (value / top) * (canvas.height - 16);
            if (index === 0) context.moveTo(x, y); else context.lineTo(x, y);
          });
          context.stroke();
          context.fillStyle = "#59636e";
          context.fillText(top.toFixed(0) + " requests/s (data operations)", 4, 12);
        }

        let tick = 0;
        async function refresh() {
          const problem = document.getElementById("problem");
          try {
            const status = await api("/v1/_cluster");
            showMembers(status);
            if (!layout || layout.version !== status.layout_version || tick % 10 === 0) layout = await api("/v1/_cluster/layout");
            let transfers = null;
            try { transfers = await api("/v1/_cluster/transfers"); showTransfers(transfers); }
            catch (error) { document.getElementById("transfer-summary").textContent = error.message; }
            showLayout(transfers);
            showRates(parseMetrics(await api("/metrics", true)));
            problem.textContent = "";
            document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
            document.body.dataset.loaded = "true";
          } catch (error) {
            problem.textContent = error.message;
          }
          tick++;
        }

        document.getElementById("login").addEventListener("submit", event => {
          event.preventDefault();
          token = document.getElementById("token").value.trim();
          sessionStorage.setItem("kv-token", token);
          document.getElementById("login").style.display = "none";
          refresh();
        });
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body>
        </html>

        """#.utf8)
}
