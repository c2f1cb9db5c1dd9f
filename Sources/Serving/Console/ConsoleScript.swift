extension ConsoleAssets {
    /// The console's script: reads `/admin/events` (a fetch stream, so the key goes in a header),
    /// renders each view from the latest snapshot, and calls the admin API for actions.
    static let script = #"""
        const views = ["overview", "residency", "coldstarts", "instances", "migrations", "experiments", "playground"];
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
        // Puts the children in an element (arrays flattened; null, undefined and false left out:
        // replaceChildren would show them as text).
        function fill(element, ...children) {
          element.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
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
          const renderers = { overview, residency, coldstarts, instances, migrations, experiments, playground };
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
          fill(section,
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
          const links = nodes.flatMap((node) => (node.inventory.links || []).map((link) =>
            h("tr", { "data-node": node.node, "data-source": link.source }, h("td", {}, node.node), h("td", {}, link.source),
              h("td", { class: "num" }, rate(link.bytes_per_second)), h("td", { class: "num" }, link.fetches), h("td", { class: "num" }, bytes(link.bytes)))));
          const hits = (node) => {
            const loads = snapshot.decisions.filter((d) => d.node === node.node);
            return loads.length ? `${Math.round(100 * loads.filter((d) => d.tier === "dram").length / loads.length)} % of ${loads.length}` : "—";
          };
          fill(section,
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
              })),
            h("h3", {}, "Links: fetch bandwidth measured per source"),
            links.length ? table(["node", "from", "bandwidth ", "fetches ", "bytes fetched "], links, { id: "links" })
              : h("p", { class: "muted", id: "links-empty" }, "No node has fetched a checkpoint from a peer or a remote store yet."));
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
            const fetched = row.fetched_bytes ? Object.entries(row.fetched_bytes).map(([source, count]) => {
              const seconds = row.fetch_seconds ? row.fetch_seconds[source] : null;
              return `${source}: ${bytes(count)}${seconds ? ` at ${rate(count / seconds)}` : ""}`;
            }).join(", ") : null;
            return h("tr", { "data-instance": row.instance },
              h("td", {}, time(row.at)),
              h("td", {}, row.deployment, h("div", { class: "muted" }, row.instance)),
              h("td", {}, row.node, h("div", {}, h("span", { class: `tier ${row.tier}` }, row.tier))),
              h("td", {}, svg("svg", { width, height: 18, role: "img", "aria-label": phases.map(([name, label]) => `${label} ${ms(values[name])}`).join(", ") },
                bars, svg("rect", { x, y: 7, width: rest, height: 4, fill: "var(--muted)" })),
                h("div", { class: "muted" }, phases.map(([name, label]) => `${label.toLowerCase()} ${ms(values[name])}`).join(" · "),
                  row.verify_seconds ? ` (checksums ${ms(row.verify_seconds)} of thread time, during the load)` : "")),
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
          fill(section, h("h2", {}, "Cold starts"), legend,
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
          const usage = new Map(snapshot.nodes.flatMap((node) => node.inventory && node.inventory.usage ? node.inventory.usage : [])
            .map((u) => [u.id, u]));
          const instanceRows = rows.map((row) => {
            const report = snapshot.deployments.find((d) => d.status.spec.name === row.deployment);
            const use = usage.get(row.id);
            const kv = use ? h("td", { class: "num", "data-kv": use.kv_used_bytes },
              `${bytes(use.kv_used_bytes)} / ${bytes(use.kv_cache_bytes)}`,
              h("div", { class: "muted" }, `${use.active_sequences} running, ${use.retained_sequences} kept`)) : h("td", { class: "num" }, "—");
            const cache = use ? h("td", { class: "num", "data-cache-hits": use.prompt_cache_hits },
              use.requests ? `${use.prompt_cache_hits} / ${use.requests}` : "—",
              use.prompt_tokens ? h("div", { class: "muted" }, `${Math.round(100 * use.cached_prompt_tokens / use.prompt_tokens)} % of prompt tokens`) : null)
              : h("td", { class: "num" }, "—");
            const concurrency = report.status.spec.scaling.target_concurrency;
            const targets = alive.filter((node) => node !== row.node);
            const migrate = h("form", { class: "inline", onsubmit: (event) => {
              event.preventDefault();
              const node = event.target.elements.node.value;
              act(event.submitter, `/admin/instances/${encodeURIComponent(row.id)}/migrate`, node ? { node } : {});
            } }, h("label", {}, "to", h("select", { name: "node", disabled }, h("option", { value: "" }, "scheduler's choice"),
              targets.map((node) => h("option", { value: node }, node)))),
              h("button", { type: "submit", class: "secondary", disabled: disabled || !targets.length || row.state !== "ready" || null, title: why }, "Migrate"));
            const stopOne = h("button", { class: "secondary", "data-action": "stop-instance", "data-instance": row.id, title: why,
              disabled: disabled || row.state !== "ready" || null,
              onclick: (event) => act(event.target, `/admin/instances/${encodeURIComponent(row.id)}/stop`) }, "Stop");
            return h("tr", { "data-instance": row.id, "data-state": row.state },
              h("td", {}, row.id), h("td", {}, row.deployment), h("td", {}, row.state, row.load_progress !== undefined && row.load_progress !== null && row.state !== "ready" ? ` ${Math.round(row.load_progress * 100)} %` : ""),
              h("td", {}, row.node || "—"), h("td", {}, row.tier ? h("span", { class: `tier ${row.tier}` }, row.tier) : "—"),
              h("td", { class: "num" }, row.started_at ? `${Math.round((serverNow() - new Date(row.started_at).getTime()) / 1000)} s` : "—"),
              h("td", { class: "num" }, `${row.in_flight} / ${concurrency}`), h("td", { class: "num" }, bytes(row.memory_bytes)), kv, cache,
              h("td", { class: "num", "data-expires": row.expires_at || "" }, row.expires_at ? countdown(row.expires_at) : (row.keep_alive === "-1" ? "kept" : row.in_flight ? "busy" : "—")),
              h("td", {}, stopOne, migrate));
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
          fill(section, h("h2", {}, "Instances"),
            state.admin ? null : h("p", { class: "hint", id: "read-only" }, "Read-only key: actions need an admin key."),
            rows.length ? table(["instance", "deployment", "state", "node", "tier", "age ", "in flight / target ", "memory ", "KV cache used ", "prompt-cache hits ", "stops in ", "actions"], instanceRows, { id: "instances" })
              : h("p", { class: "muted" }, "No instance is running: every model is scaled to zero."),
            h("h3", {}, "Deployments"),
            table(["deployment", "model", "state", "in flight / queued ", "", "scaling"], deploymentRows, { id: "deployments" }));
        }

        function migrations(section, snapshot) {
          const rows = snapshot.migrations.map((m) => {
            const r = m.report;
            const succeeded = r && r.succeeded && !m.failure;
            // A rebalance moves requests between two running instances; both serve on.
            const outcome = m.failure ? `abandoned: ${m.failure}` : r.rebalance ? (r.succeeded ? "rebalanced: both serve on" : "rebalance: a request came back")
              : r.succeeded ? "done" : "the source serves on";
            // A migration whose target never started has no figures of its own.
            const figures = r ? [
              r.rebalance ? h("td", {}, "running") : h("td", {}, h("span", { class: `tier ${r.tier}` }, r.tier)), h("td", { class: "num" }, r.warmed_tokens), h("td", { class: "num" }, r.rounds),
              h("td", { class: "num" }, ms(r.longest_pause_seconds)), h("td", { class: "num" }, `${r.moved} / ${r.came_back} / ${r.ended_meanwhile}`),
            ] : [h("td", {}, "—"), h("td", { class: "num" }, "—"), h("td", { class: "num" }, "—"), h("td", { class: "num" }, "—"), h("td", { class: "num" }, "—")];
            return h("tr", { "data-instance": m.instance, "data-outcome": succeeded ? "done" : "failed" },
              h("td", {}, time(m.at)), h("td", {}, m.deployment), h("td", {}, `${m.instance} → ${m.target}`),
              h("td", {}, `${m.from} → ${m.to || "scheduler's choice"}`), figures,
              h("td", { class: "num" }, ms(m.seconds)), h("td", { class: succeeded ? "ok" : "bad" }, outcome));
          });
          fill(section, h("h2", {}, "Live migrations"),
            rows.length ? table(["when", "deployment", "instance", "nodes", "target tier", "tokens re-prefilled ", "rounds ", "pause ", "moved / back / ended ", "took ", "outcome"], rows, { id: "migrations" })
              : h("p", { class: "muted" }, "No migration yet."));
        }

        // MARK: simulator runs beside the live figures

        // Read once when the view first opens (and on Reload): the runs are files, not live state.
        async function loadExperiments() {
          state.experiments = { loading: true };
          const response = await api("/admin/experiments");
          state.experiments = response.ok ? await response.json() : { error: await errorMessage(response) };
          render(true);
        }
        const policyColours = ["var(--load)", "var(--prefill)", "var(--fetch)", "var(--init)", "var(--warn)", "var(--queue)"];
        function quantileOf(sorted, q) { return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : null; }

        function experiments(section, snapshot) {
          if (!state.experiments) { loadExperiments(); fill(section, h("h2", {}, "Simulator runs"), h("p", { class: "muted" }, "Reading the runs…")); return; }
          const report = state.experiments;
          // This server's cold starts, as the simulator counts them: from a request's arrival to
          // an instance taking it (queue, load, engine init), and to its first token.
          const live = snapshot.cold_starts.map((row) => row.queue_seconds + row.load_seconds + row.init_seconds).sort((a, b) => a - b);
          const liveTTFT = snapshot.cold_starts.map((row) => row.first_token_seconds).sort((a, b) => a - b);
          const reload = h("button", { class: "secondary", id: "experiments-reload", onclick: () => loadExperiments() }, "Reload");
          const intro = h("p", { class: "hint" }, "Runs of ", h("code", {}, "sllm simulate --out DIR"), " found in ", h("code", {}, report.directory || "the experiments directory"),
            " (one run per subdirectory; ", h("code", {}, "sllm serve --experiments DIR"), " reads another). Each plot is the run's cold-start latency CDF per policy, with this server's own cold starts (",
            live.length, ") drawn over it, dashed.");
          if (report.loading) { fill(section, h("h2", {}, "Simulator runs"), h("p", { class: "muted" }, "Reading the runs…")); return; }
          if (report.error) { fill(section, h("h2", {}, "Simulator runs"), h("p", { class: "error" }, report.error), reload); return; }
          const liveRow = h("tr", { class: "live-row", id: "experiments-live" }, h("td", {}, "live"), h("td", {}, "this server"),
            h("td", { class: "num" }, live.length), h("td", { class: "num" }, ms(quantileOf(live, 0.5))), h("td", { class: "num" }, ms(quantileOf(live, 0.99))),
            h("td", { class: "num" }, ms(quantileOf(liveTTFT, 0.5))), h("td", { class: "num" }, ms(quantileOf(liveTTFT, 0.99))), h("td", { class: "num" }, "—"), h("td", { class: "num" }, "—"));
          const runs = report.runs.map((run) => {
            if (run.error) return h("article", { class: "run", "data-run": run.name }, h("h3", {}, run.name), h("p", { class: "error" }, run.error));
            const points = [...new Set(run.cdfs.map((c) => c.point))];
            state.experimentPoints = state.experimentPoints || {};
            const chosen = points.includes(state.experimentPoints[run.name]) ? state.experimentPoints[run.name] : points[0];
            const pick = points.length > 1 ? h("label", {}, "point ", h("select", { "data-run": run.name, onchange: (event) => {
              state.experimentPoints[run.name] = event.target.value; render(true); } },
              points.map((point) => h("option", { value: point, selected: point === chosen }, point)))) : null;
            const curves = run.cdfs.filter((c) => c.point === chosen);
            const rows = run.rows.map((row) => h("tr", { "data-policy": row.policy, "data-point": row.point },
              h("td", {}, row.point), h("td", {}, row.policy), h("td", { class: "num" }, row.cold_requests.toLocaleString()),
              h("td", { class: "num" }, ms(row.cold_start_p50)), h("td", { class: "num" }, ms(row.cold_start_p99)),
              h("td", { class: "num" }, ms(row.cold_first_token_p50)), h("td", { class: "num" }, ms(row.cold_first_token_p99)),
              h("td", { class: "num" }, `${row.failed.toLocaleString()} / ${row.requests.toLocaleString()}`), h("td", { class: "num" }, row.migrations.toLocaleString())));
            return h("article", { class: "run", "data-run": run.name },
              h("h3", {}, run.name, run.modified ? h("span", { class: "muted" }, ` (${new Date(run.modified).toLocaleString()})`) : null), pick,
              cdfChart(run.name, chosen, curves, live),
              table(["point", "policy", "cold requests ", "cold start p50 ", "p99 ", "cold TTFT p50 ", "p99 ", "failed / requests ", "migrations "], [...rows, liveRow.cloneNode(true)]));
          });
          fill(section, h("h2", {}, "Simulator runs"), intro, reload,
            runs.length ? runs : h("p", { class: "muted", id: "experiments-empty" }, "No run found. Write one with sllm simulate --out ", report.directory ? `${report.directory}/NAME` : "DIR/NAME", "."));
        }

        // A CDF per policy on a log time axis (steps, as the simulator's own plots), and the live
        // one dashed.
        function cdfChart(name, point, curves, live) {
          const width = 640, height = 220, left = 44, bottom = 34, top = 10, right = 24;
          const liveCurve = live.map((x, i) => [x, (i + 1) / live.length]);
          const xs = curves.flatMap((c) => c.points.map((p) => p[0])).concat(live).filter((x) => x > 0);
          const low = Math.pow(10, Math.floor(Math.log10(Math.max(1e-4, Math.min(...xs, 1)))));
          const high = Math.pow(10, Math.ceil(Math.log10(Math.max(low * 10, ...xs, 0.01))));
          const X = (x) => left + (Math.log10(Math.max(low, x)) - Math.log10(low)) / (Math.log10(high) - Math.log10(low)) * (width - left - right);
          const Y = (y) => height - bottom - y * (height - bottom - top);
          const path = (points) => {
            let d = `M${X(points.length ? points[0][0] : low)},${Y(0)}`;
            for (const [x, y] of points) d += ` H${X(x)} V${Y(y)}`;
            return d;
          };
          const ticks = [];
          for (let decade = low; decade <= high * 1.001; decade *= 10) {
            ticks.push(svg("line", { x1: X(decade), x2: X(decade), y1: top, y2: height - bottom, stroke: "var(--line)" }),
              svg("text", { x: X(decade), y: height - bottom + 14, "text-anchor": "middle" },
                decade >= 1 ? `${Math.round(decade)} s` : `${Number((decade * 1000).toPrecision(3))} ms`));
          }
          const lines = curves.map((curve, i) => svg("path", { d: path(curve.points), fill: "none", stroke: policyColours[i % policyColours.length], "stroke-width": 2, "data-policy": curve.policy },
            svg("title", {}, curve.policy)));
          const liveLine = liveCurve.length ? svg("path", { d: path(liveCurve), fill: "none", stroke: "var(--fg)", "stroke-width": 2, "stroke-dasharray": "5 4", id: `live-${name}` },
            svg("title", {}, "this server")) : null;
          return h("figure", { class: "chart" },
            svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", class: "cdf", "data-run": name,
              "aria-label": `Cold-start latency CDF of ${name} (${point}): ${curves.map((c) => c.policy).join(", ")}${liveCurve.length ? ", and this server's" : ""}` },
              ticks, svg("line", { x1: left, x2: width - right, y1: Y(0), y2: Y(0), stroke: "var(--line)" }),
              svg("text", { x: 0, y: Y(1) + 4 }, "100 %"), svg("text", { x: 0, y: Y(0.5) + 4 }, "50 %"), svg("text", { x: 0, y: Y(0) }, "0"),
              svg("text", { x: left, y: height - 4 }, "arrival to an instance taking the request (log)"),
              lines, liveLine),
            h("figcaption", { class: "legend" }, curves.map((curve, i) => h("span", {}, h("i", { class: `swatch-policy-${i % policyColours.length}` }), curve.policy)),
              liveCurve.length ? h("span", {}, h("i", { class: "swatch-live" }), `this server (${liveCurve.length} cold starts)`) : null));
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
