extension ConsoleAssets {
    /// The console's script: reads `/admin/events` (a fetch stream, so the key goes in a header),
    /// renders each view from the latest snapshot, and calls the admin API for actions.
    static let script = #"""
        const views = ["overview", "residency", "coldstarts", "instances", "migrations", "playground"];
        const windowNames = { 60: "1 minute", 300: "5 minutes", 900: "15 minutes", 3600: "1 hour" };
        const phases = [["queue", "Queue"], ["load", "Load"], ["init", "Engine init"], ["prefill", "Prefill"]];
        const state = {
          key: sessionStorage.getItem("sllm-key") || "",
          admin: false, snapshot: null, clockOffset: 0, view: "overview",
          window: Number(localStorage.getItem("sllm-window")) || 300, stream: null,
        };
        const $ = (id) => document.getElementById(id);

        // Elements are built, never parsed from strings: names and messages come from users.
        function h(tag, attributes, ...children) {
          const element = document.createElement(tag);
          for (const [name, value] of Object.entries(attributes || {})) {
            if (value === undefined || value === null || value === false) continue;
            if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
            else if (name === "text") element.textContent = value;
            else element.setAttribute(name, value === true ? "" : String(value));
          }
          for (const child of children.flat()) {
            if (child === undefined || child === null || child === false) continue;
            element.append(child instanceof Node ? child : document.createTextNode(String(child)));
          }
          return element;
        }
        function svg(tag, attributes, ...children) {
          const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
          for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, String(value));
          for (const child of children.flat()) if (child) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
          return element;
        }
        function table(headers, rows, attributes) {
          return h("div", { class: "scroll" }, h("table", attributes || {},
            h("thead", {}, h("tr", {}, headers.map((header) =>
              h("th", { scope: "col", class: header.endsWith(" ") ? "num" : null }, header.trim())))),
            h("tbody", {}, rows)));
        }

        const bytes = (n) => {
          if (n === undefined || n === null) return "—";
          const units = ["B", "KiB", "MiB", "GiB", "TiB"];
          let value = n, unit = 0;
          while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
          return `${value.toLocaleString(undefined, { maximumFractionDigits: unit ? 1 : 0 })} ${units[unit]}`;
        };
        const ms = (seconds) => seconds === undefined || seconds === null ? "—"
          : `${(seconds * 1000).toLocaleString(undefined, { maximumFractionDigits: seconds < 0.01 ? 2 : 1 })} ms`;
        const rate = (perSecond) => perSecond ? `${(perSecond / 1e9).toLocaleString(undefined, { maximumFractionDigits: 2 })} GB/s` : "—";
        const time = (iso) => iso ? new Date(iso).toLocaleTimeString() : "—";
        const serverNow = () => Date.now() + state.clockOffset;
        function countdown(iso) {
          if (!iso) return "—";
          const left = Math.max(0, Math.round((new Date(iso).getTime() - serverNow()) / 1000));
          const minutes = Math.floor(left / 60);
          return minutes ? `${minutes} min ${left % 60} s` : `${left} s`;
        }
        function notice(text, bad) {
          const element = $("notice");
          element.textContent = text;
          element.className = bad ? "error" : "";
          clearTimeout(notice.timer);
          notice.timer = setTimeout(() => { element.textContent = ""; }, 6000);
        }

        async function api(path, options = {}) {
          const headers = Object.assign({}, options.headers || {});
          if (state.key) headers.Authorization = `Bearer ${state.key}`;
          if (options.body) headers["Content-Type"] = "application/json";
          return fetch(path, Object.assign({}, options, { headers }));
        }
        // The `data:` of each server-sent event in a response body, as it arrives (comments and
        // other fields skipped).
        async function* serverSentEvents(response) {
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              const data = block.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
              if (data) yield data;
            }
          }
        }
        async function errorMessage(response) {
          try { return (await response.json()).error.message; } catch { return `HTTP ${response.status}`; }
        }

        // MARK: signing in

        async function signIn() {
          // A server that wants keys gets none of our calls before the user gave one.
          if (!state.key && document.documentElement.dataset.keys === "required") { showLogin(""); return; }
          const response = await api("/admin/console");
          if (response.status === 401) { showLogin(state.key ? "That key was not accepted." : ""); return; }
          if (!response.ok) { showLogin(await errorMessage(response)); return; }
          const event = await response.json();
          // An admin key acts; any other key looks.
          state.admin = event.access === "admin";
          $("role").textContent = state.admin ? "admin" : "read-only";
          $("login").hidden = true;
          accept(event);
          $("signout").hidden = !state.key;
          show(location.hash.slice(1) || state.view);
          follow();
        }
        function showLogin(message) {
          for (const view of views) $(`view-${view}`).hidden = true;
          $("login").hidden = false;
          $("login-error").textContent = message || "";
          $("key").focus();
        }
        $("login-form").addEventListener("submit", (event) => {
          event.preventDefault();
          state.key = $("key").value.trim();
          sessionStorage.setItem("sllm-key", state.key);
          $("key").value = "";
          signIn();
        });
        $("signout").addEventListener("click", () => {
          sessionStorage.removeItem("sllm-key");
          state.key = "";
          state.admin = false;
          if (state.stream) state.stream.abort();
          $("role").textContent = "";
          $("signout").hidden = true;
          showLogin("");
        });

        // MARK: the event stream

        function accept(event) {
          state.clockOffset = new Date(event.server_time).getTime() - Date.now();
          state.snapshot = event.snapshot;
          $("version").textContent = event.snapshot.version;
          render();
        }
        async function follow() {
          if (state.stream) state.stream.abort();
          const controller = new AbortController();
          state.stream = controller;
          while (!controller.signal.aborted) {
            try {
              const response = await api("/admin/events", { signal: controller.signal });
              if (response.status === 401) { showLogin("The key is no longer accepted."); return; }
              if (!response.ok) throw new Error(await errorMessage(response));
              $("live").className = "live on";
              $("live").textContent = "live";
              for await (const data of serverSentEvents(response)) accept(JSON.parse(data));
            } catch (error) {
              if (controller.signal.aborted) return;
            }
            $("live").className = "live off";
            $("live").textContent = "reconnecting";
            await new Promise((resolve) => setTimeout(resolve, 2000));
          }
        }

        // MARK: views

        function show(view) {
          if (!views.includes(view)) view = "overview";
          state.view = view;
          for (const name of views) {
            const selected = name === view;
            $(`view-${name}`).hidden = !selected;
            $(`tab-${name}`).setAttribute("aria-selected", String(selected));
            $(`tab-${name}`).tabIndex = selected ? 0 : -1;
          }
          if (location.hash.slice(1) !== view) history.replaceState(null, "", `#${view}`);
          render(true);
        }
        for (const name of views) $(`tab-${name}`).addEventListener("click", () => show(name));
        $("tabs").addEventListener("keydown", (event) => {
          const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
          if (!step) return;
          const next = views[(views.indexOf(state.view) + step + views.length) % views.length];
          show(next);
          $(`tab-${next}`).focus();
        });

        function render(force) {
          const snapshot = state.snapshot;
          if (!snapshot || $("login").hidden === false) return;
          const section = $(`view-${state.view}`);
          // A form being filled in is not redrawn under the user's hands.
          if (!force && section.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) return;
          const renderers = { overview, residency, coldstarts, instances, migrations, playground };
          renderers[state.view](section, snapshot);
        }

        function instancesOf(snapshot) {
          return snapshot.deployments.flatMap((report) =>
            report.status.instances.map((instance) => ({ deployment: report.status.spec.name, model: report.status.spec.model, ...instance })));
        }

        function overview(section, snapshot) {
          const stats = snapshot.windows.find((w) => w.seconds === state.window) || snapshot.windows[0];
          const instances = instancesOf(snapshot);
          const alive = snapshot.nodes.filter((node) => node.state === "alive").length;
          const inFlight = snapshot.deployments.reduce((sum, d) => sum + d.status.in_flight, 0);
          const queued = snapshot.deployments.reduce((sum, d) => sum + d.status.queued, 0);
          const card = (label, value, id) => h("div", { class: "card", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
          const select = h("select", { id: "window", onchange: (event) => {
            state.window = Number(event.target.value);
            localStorage.setItem("sllm-window", String(state.window));
            render(true);
          } }, Object.entries(windowNames).map(([seconds, name]) =>
            h("option", { value: seconds, selected: Number(seconds) === state.window }, name)));
          const p = (percentiles) => [ms(percentiles.p50), ms(percentiles.p90), ms(percentiles.p99)];
          section.replaceChildren(
            h("h2", {}, "Overview"),
            h("div", { class: "cards" },
              card("nodes alive", `${alive} / ${snapshot.nodes.length}`, "card-nodes"),
              card("deployments", snapshot.deployments.length, "card-deployments"),
              card("instances ready", `${instances.filter((i) => i.state === "ready").length} / ${instances.length}`, "card-instances"),
              card("requests in flight", inFlight, "card-inflight"),
              card("requests queued", queued, "card-queued")),
            h("h3", {}, "Requests over the last ", h("label", { class: "muted" }, select)),
            table(["", "requests ", "per second ", "error rate ", "p50 ", "p90 ", "p99 "], [
              h("tr", { id: "stats-ttft" }, h("th", { scope: "row" }, "time to first token"), h("td", { class: "num" }, stats.requests),
                h("td", { class: "num" }, stats.requests_per_second.toFixed(2)), h("td", { class: "num" }, `${(stats.error_rate * 100).toFixed(1)} %`),
                p(stats.first_token).map((value) => h("td", { class: "num" }, value))),
              h("tr", { id: "stats-itl" }, h("th", { scope: "row" }, "inter-token latency"), h("td", { class: "num" }, stats.inter_token.samples),
                h("td", {}), h("td", {}), p(stats.inter_token).map((value) => h("td", { class: "num" }, value))),
            ]),
            chart(stats),
            h("h3", {}, "Nodes"),
            table(["node", "state", "cores ", "memory used / budget ", "DRAM cache used / budget ", "instances ", "jobs ", "load bandwidth"],
              snapshot.nodes.map((node) => {
                const inventory = node.inventory;
                const dram = inventory ? inventory.tiers.find((t) => t.tier === "dram") : null;
                return h("tr", { "data-node": node.node },
                  h("td", {}, node.node),
                  h("td", { class: node.state === "alive" ? "ok" : "bad" }, node.state, node.reason ? ` (${node.reason})` : ""),
                  h("td", { class: "num" }, inventory ? inventory.cores : "—"),
                  h("td", { class: "num" }, inventory ? `${bytes(inventory.reserved_bytes)} / ${bytes(inventory.memory_budget_bytes)}` : "—"),
                  h("td", { class: "num" }, inventory ? `${bytes(dram ? dram.used_bytes : 0)} / ${bytes(inventory.dram_budget_bytes)}` : "—"),
                  h("td", { class: "num" }, inventory ? inventory.instances.length : "—"),
                  h("td", { class: "num" }, inventory ? inventory.running_jobs : "—"),
                  h("td", {}, inventory ? inventory.tiers.filter((t) => t.load_bytes_per_second).map((t) => `${t.tier} ${rate(t.load_bytes_per_second)}`).join(", ") || "—" : "—"));
              })));
        }

        function chart(stats) {
          const width = 640, height = 140, left = 40, bottom = 20;
          const points = stats.series;
          const most = Math.max(1, ...points.map((p) => p.requests));
          const slowest = Math.max(0.001, ...points.map((p) => p.first_token_p50 || 0));
          const step = (width - left) / Math.max(1, points.length);
          const bars = points.map((p, i) => svg("rect", { x: left + i * step + 1, width: Math.max(1, step - 2),
            y: height - bottom - (p.requests / most) * (height - bottom - 10), height: (p.requests / most) * (height - bottom - 10),
            fill: p.errors ? "var(--bad)" : "var(--load)" }, svg("title", {}, `${p.requests} requests, ${p.errors} errors`)));
          const line = points.map((p, i) => p.first_token_p50 === undefined || p.first_token_p50 === null ? null
            : `${left + i * step + step / 2},${height - bottom - (p.first_token_p50 / slowest) * (height - bottom - 10)}`).filter(Boolean);
          return h("figure", { class: "chart" },
            svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", id: "requests-chart",
              "aria-label": `Requests per ${stats.bucket_seconds} s and median time to first token over ${windowNames[stats.seconds] || stats.seconds + " s"}` },
              svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, stroke: "var(--line)" }),
              svg("text", { x: 0, y: 12 }, `${most}`), svg("text", { x: 0, y: height - bottom }, "0"),
              svg("text", { x: left, y: height - 4 }, `−${windowNames[stats.seconds] || stats.seconds + " s"}`),
              svg("text", { x: width - 30, y: height - 4 }, "now"),
              bars,
              line.length > 1 ? svg("polyline", { points: line.join(" "), fill: "none", stroke: "var(--prefill)", "stroke-width": 2 }) : null),
            h("figcaption", { class: "legend" }, h("span", {}, h("i", { class: "swatch-load" }), `requests per ${stats.bucket_seconds} s`),
              h("span", {}, h("i", { class: "swatch-prefill" }), `median time to first token (top: ${ms(slowest)})`)));
        }

        function residency(section, snapshot) {
          const nodes = snapshot.nodes.filter((node) => node.inventory);
          const models = new Set(snapshot.deployments.map((d) => d.status.spec.model));
          for (const node of nodes) for (const tier of node.inventory.tiers) for (const model of tier.models) models.add(model.name);
          const held = (node, model) => {
            const tiers = [];
            if (node.inventory.running.some((instance) => instance.model === model)) tiers.push(["engine", "engine memory", null]);
            for (const tier of node.inventory.tiers) {
              const entry = tier.models.find((m) => m.name === model);
              if (entry) tiers.push([tier.tier, tier.tier.toUpperCase(), entry.bytes]);
            }
            return tiers;
          };
          const clusterTiers = (model) => {
            const report = snapshot.deployments.find((d) => d.status.spec.model === model);
            return report ? report.tiers.join(", ") : "—";
          };
          const hits = (node) => {
            const loads = snapshot.decisions.filter((d) => d.node === node.node);
            return loads.length ? `${Math.round(100 * loads.filter((d) => d.tier === "dram").length / loads.length)} % of ${loads.length}` : "—";
          };
          section.replaceChildren(
            h("h2", {}, "Tier residency"),
            h("p", { class: "hint" }, "Where each model's checkpoint sits, fastest tier first: engine memory (a running instance), DRAM cache, SSD."),
            table(["model", ...nodes.map((node) => node.node), "tiers holding it"], [...models].sort().map((model) =>
              h("tr", { "data-model": model },
                h("th", { scope: "row" }, model),
                nodes.map((node) => {
                  const tiers = held(node, model);
                  return h("td", { "data-node": node.node, "data-tiers": tiers.map(([name]) => name).join(" ") },
                    tiers.length ? tiers.map(([name, label, size]) => h("span", { class: `tier ${name}` }, label, size ? ` ${bytes(size)}` : "")) : h("span", { class: "muted" }, "—"));
                }),
                h("td", {}, clusterTiers(model)))), { id: "residency" }),
            h("h3", {}, "Budgets and bandwidth per node"),
            table(["node", "memory used / budget ", "DRAM used / budget ", "DRAM hits (placements)", "DRAM", "SSD", "peer", "remote"],
              nodes.map((node) => {
                const tier = (name) => node.inventory.tiers.find((t) => t.tier === name);
                const bandwidth = (name) => { const t = tier(name); return t && t.load_bytes_per_second ? `${rate(t.load_bytes_per_second)} (${t.loads})` : "—"; };
                return h("tr", {}, h("td", {}, node.node),
                  h("td", { class: "num" }, `${bytes(node.inventory.reserved_bytes)} / ${bytes(node.inventory.memory_budget_bytes)}`),
                  h("td", { class: "num" }, `${bytes(tier("dram") ? tier("dram").used_bytes : 0)} / ${bytes(node.inventory.dram_budget_bytes)}`),
                  h("td", {}, hits(node)), ["dram", "ssd", "peer", "remote"].map((name) => h("td", {}, bandwidth(name))));
              })));
        }

        function coldstarts(section, snapshot) {
          const rows = snapshot.cold_starts;
          const longest = Math.max(0.001, ...rows.map((row) => row.first_token_seconds));
          const width = 360;
          const legend = h("p", { class: "legend" }, phases.map(([name, label]) => h("span", {}, h("i", { class: `swatch-${name}` }), label)),
            h("span", {}, h("i", { class: "swatch-rest" }), "rest of the first token"));
          const body = rows.map((row) => {
            const values = { queue: row.queue_seconds, load: row.load_seconds, init: row.init_seconds, prefill: row.prefill_seconds };
            let x = 0;
            const bars = phases.map(([name, label]) => {
              const w = (values[name] / longest) * width;
              const rect = svg("rect", { x, y: 2, width: Math.max(0.5, w), height: 14, fill: `var(--${name})`, "data-phase": name },
                svg("title", {}, `${label}: ${ms(values[name])}`));
              x += w;
              return rect;
            });
            const rest = Math.max(0, (row.first_token_seconds / longest) * width - x);
            const decision = snapshot.decisions.find((d) => d.instance === row.instance);
            const fetched = row.fetched_bytes ? Object.entries(row.fetched_bytes).map(([source, count]) =>
              `${source}: ${bytes(count)}`).join(", ") : null;
            return h("tr", { "data-instance": row.instance },
              h("td", {}, time(row.at)),
              h("td", {}, row.deployment, h("div", { class: "muted" }, row.instance)),
              h("td", {}, row.node, h("div", {}, h("span", { class: `tier ${row.tier}` }, row.tier))),
              h("td", {}, svg("svg", { width, height: 18, role: "img", "aria-label": phases.map(([name, label]) => `${label} ${ms(values[name])}`).join(", ") },
                bars, svg("rect", { x, y: 7, width: rest, height: 4, fill: "var(--muted)" })),
                h("div", { class: "muted" }, phases.map(([name, label]) => `${label.toLowerCase()} ${ms(values[name])}`).join(" · "))),
              h("td", { class: "num" }, ms(row.first_token_seconds), h("div", { class: "muted" }, `${row.prompt_tokens} prompt tokens`)),
              h("td", {}, `${bytes(row.weight_bytes)} at ${rate(row.load_seconds > 0 ? row.weight_bytes / row.load_seconds : 0)}`,
                fetched ? h("div", { class: "muted" }, `fetched from ${fetched}`) : null),
              h("td", {}, decision ? [
                h("div", {}, `${decision.policy}: ${decision.node} from ${decision.tier}`),
                h("div", { class: "muted" }, `estimated ${ms(decision.estimated_seconds)}, took ${ms(decision.actual_seconds)}`),
                h("div", { class: "muted" }, `queued ${ms(decision.queued_seconds)}, room ${ms(decision.room_seconds || 0)}, ${rate(decision.bandwidth)} × ${decision.correction.toFixed(2)}`),
                decision.candidates.length > 1 ? h("div", { class: "muted" }, `${decision.candidates.length} candidates`) : null,
              ] : h("span", { class: "muted" }, "—")));
          });
          section.replaceChildren(h("h2", {}, "Cold starts"), legend,
            rows.length ? table(["when", "deployment", "node, tier", "phases (to scale)", "first token ", "checkpoint", "placement: estimate and actual"], body, { id: "waterfall" })
              : h("p", { class: "muted", id: "waterfall-empty" }, "No cold start yet."));
        }

        function instances(section, snapshot) {
          const rows = instancesOf(snapshot);
          const alive = snapshot.nodes.filter((node) => node.state === "alive").map((node) => node.node);
          const disabled = state.admin ? null : true;
          const why = state.admin ? null : "needs an admin key";
          const act = async (button, path, body, method = "POST") => {
            button.disabled = true;
            const response = await api(path, { method, body: body ? JSON.stringify(body) : undefined });
            button.disabled = false;
            notice(response.ok ? `${method} ${path}: done` : `${method} ${path}: ${await errorMessage(response)}`, !response.ok);
          };
          const instanceRows = rows.map((row) => {
            const report = snapshot.deployments.find((d) => d.status.spec.name === row.deployment);
            const concurrency = report.status.spec.scaling.target_concurrency;
            const targets = alive.filter((node) => node !== row.node);
            const migrate = h("form", { class: "inline", onsubmit: (event) => {
              event.preventDefault();
              const node = event.target.elements.node.value;
              act(event.submitter, `/admin/instances/${encodeURIComponent(row.id)}/migrate`, node ? { node } : {});
            } }, h("label", {}, "to", h("select", { name: "node", disabled }, h("option", { value: "" }, "scheduler's choice"),
              targets.map((node) => h("option", { value: node }, node)))),
              h("button", { type: "submit", class: "secondary", disabled: disabled || !targets.length || row.state !== "ready" || null, title: why }, "Migrate"));
            return h("tr", { "data-instance": row.id, "data-state": row.state },
              h("td", {}, row.id), h("td", {}, row.deployment), h("td", {}, row.state, row.load_progress !== undefined && row.load_progress !== null && row.state !== "ready" ? ` ${Math.round(row.load_progress * 100)} %` : ""),
              h("td", {}, row.node || "—"), h("td", {}, row.tier ? h("span", { class: `tier ${row.tier}` }, row.tier) : "—"),
              h("td", { class: "num" }, row.started_at ? `${Math.round((serverNow() - new Date(row.started_at).getTime()) / 1000)} s` : "—"),
              h("td", { class: "num" }, `${row.in_flight} / ${concurrency}`), h("td", { class: "num" }, bytes(row.memory_bytes)),
              h("td", { class: "num", "data-expires": row.expires_at || "" }, row.expires_at ? countdown(row.expires_at) : (row.keep_alive === "-1" ? "kept" : row.in_flight ? "busy" : "—")),
              h("td", {}, migrate));
          });
          const deploymentRows = snapshot.deployments.map((report) => {
            const spec = report.status.spec;
            const scale = h("form", { class: "inline", "data-deployment": spec.name, onsubmit: (event) => {
              event.preventDefault();
              const f = event.target.elements;
              act(event.submitter, `/admin/deployments/${encodeURIComponent(spec.name)}`, {
                min_instances: Number(f.min.value), max_instances: Number(f.max.value), keep_alive: f.keepalive.value }, "PATCH");
            } },
              h("label", {}, "min", h("input", { name: "min", type: "number", min: 0, value: spec.scaling.min_instances, disabled })),
              h("label", {}, "max", h("input", { name: "max", type: "number", min: 1, value: spec.scaling.max_instances, disabled })),
              h("label", {}, "keep-alive", h("input", { name: "keepalive", value: spec.scaling.keep_alive, size: 6, disabled })),
              h("button", { type: "submit", class: "secondary", disabled, title: why }, "Apply"));
            const stop = h("button", { class: "secondary", "data-action": "stop", "data-deployment": spec.name, disabled, title: why,
              onclick: (event) => act(event.target, `/admin/deployments/${encodeURIComponent(spec.name)}/stop`) }, "Stop idle instances");
            return h("tr", { "data-deployment": spec.name }, h("td", {}, spec.name), h("td", {}, spec.model), h("td", {}, report.state),
              h("td", { class: "num" }, `${report.status.in_flight} / ${report.status.queued}`), h("td", {}, stop), h("td", {}, scale));
          });
          section.replaceChildren(h("h2", {}, "Instances"),
            state.admin ? null : h("p", { class: "hint", id: "read-only" }, "Read-only key: actions need an admin key."),
            rows.length ? table(["instance", "deployment", "state", "node", "tier", "age ", "in flight / target ", "memory ", "stops in ", "migrate"], instanceRows, { id: "instances" })
              : h("p", { class: "muted" }, "No instance is running: every model is scaled to zero."),
            h("h3", {}, "Deployments"),
            table(["deployment", "model", "state", "in flight / queued ", "", "scaling"], deploymentRows, { id: "deployments" }));
        }

        function migrations(section, snapshot) {
          const rows = snapshot.migrations.map((m) => {
            const r = m.report;
            const outcome = m.failure ? `abandoned: ${m.failure}` : r.succeeded ? "done" : "the source serves on";
            return h("tr", { "data-instance": r.instance },
              h("td", {}, time(m.at)), h("td", {}, m.deployment), h("td", {}, `${r.instance} → ${r.target}`), h("td", {}, `${r.from} → ${r.to}`),
              h("td", {}, h("span", { class: `tier ${r.tier}` }, r.tier)), h("td", { class: "num" }, r.warmed_tokens), h("td", { class: "num" }, r.rounds),
              h("td", { class: "num" }, ms(r.longest_pause_seconds)), h("td", { class: "num" }, `${r.moved} / ${r.came_back} / ${r.ended_meanwhile}`),
              h("td", { class: "num" }, ms(r.seconds)), h("td", { class: r.succeeded ? "ok" : "bad" }, outcome));
          });
          section.replaceChildren(h("h2", {}, "Live migrations"),
            rows.length ? table(["when", "deployment", "instance", "nodes", "target tier", "tokens re-prefilled ", "rounds ", "pause ", "moved / back / ended ", "took ", "outcome"], rows, { id: "migrations" })
              : h("p", { class: "muted" }, "No migration yet."));
        }

        function playground(section, snapshot) {
          const select = $("chat-model");
          const names = snapshot.deployments.map((d) => d.status.spec.name);
          const current = [...select.options].map((o) => o.value);
          if (names.join("\n") !== current.join("\n")) {
            const chosen = select.value;
            select.replaceChildren(...names.map((name) => h("option", { value: name, selected: name === chosen }, name)));
          }
        }
        $("chat-form").addEventListener("submit", async (event) => {
          event.preventDefault();
          const button = $("chat-send");
          const answer = $("chat-answer");
          const timings = $("chat-timings");
          button.disabled = true;
          answer.textContent = "";
          timings.replaceChildren();
          answer.setAttribute("aria-busy", "true");
          const started = performance.now();
          let firstToken = null, final = null;
          try {
            const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify({
              model: $("chat-model").value, stream: true, max_tokens: Number($("chat-max").value) || 32,
              messages: [{ role: "user", content: $("chat-prompt").value }] }) });
            if (!response.ok) throw new Error(await errorMessage(response));
            for await (const data of serverSentEvents(response)) {
              if (data === "[DONE]") continue;
              const chunk = JSON.parse(data);
              if (chunk.error) throw new Error(chunk.error.message);
              const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta ? chunk.choices[0].delta.content : null;
              if (text) {
                if (firstToken === null) firstToken = performance.now() - started;
                answer.textContent += text;
              }
              if (chunk.timings) final = chunk.timings;
            }
            const rows = [["first token (this page)", firstToken === null ? "—" : `${firstToken.toFixed(1)} ms`],
              ["total (this page)", `${(performance.now() - started).toFixed(1)} ms`]];
            if (final) {
              rows.push(["cold start", final.cold_start ? `yes, from ${final.tier}` : "no (a running instance)"],
                ["queue", `${final.queue_ms.toFixed(1)} ms`], ["load", `${final.load_ms.toFixed(1)} ms`], ["engine init", `${final.init_ms.toFixed(1)} ms`],
                ["prefill", `${final.prefill_ms.toFixed(1)} ms (${final.prompt_n} tokens)`],
                ["generation", `${final.predicted_n} tokens in ${final.predicted_ms.toFixed(1)} ms`]);
            }
            timings.replaceChildren(...rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
            timings.dataset.done = "true";
          } catch (error) {
            answer.textContent = "";
            timings.replaceChildren(h("dt", {}, "error"), h("dd", { class: "error" }, error.message));
          } finally {
            answer.removeAttribute("aria-busy");
            button.disabled = false;
          }
        });

        // Keep-alive countdowns tick between snapshots (no request: the display's own clock).
        setInterval(() => {
          for (const cell of document.querySelectorAll("[data-expires]")) {
            if (cell.dataset.expires) cell.textContent = countdown(cell.dataset.expires);
          }
        }, 1000);

        signIn();
        """#
}
