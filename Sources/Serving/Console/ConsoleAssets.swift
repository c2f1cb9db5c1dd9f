/// The console's files, compiled into the binary (no build step, nothing fetched at run time):
/// plain HTML, CSS and one script module; its charts are SVG drawn by the script.
enum ConsoleAssets {
    static let page = #"""
        <!doctype html>
        <html lang="en" data-keys="">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>sllm console</title>
        <link rel="icon" href="data:,">
        <link rel="stylesheet" href="/console/style.css">
        <script type="module" src="/console/app.js"></script>
        </head>
        <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
          <h1>sllm <span id="version"></span></h1>
          <nav aria-label="Sections">
            <ul id="tabs" role="tablist">
              <li><button role="tab" id="tab-overview" aria-controls="view-overview" aria-selected="true">Overview</button></li>
              <li><button role="tab" id="tab-residency" aria-controls="view-residency" aria-selected="false" tabindex="-1">Residency</button></li>
              <li><button role="tab" id="tab-coldstarts" aria-controls="view-coldstarts" aria-selected="false" tabindex="-1">Cold starts</button></li>
              <li><button role="tab" id="tab-instances" aria-controls="view-instances" aria-selected="false" tabindex="-1">Instances</button></li>
              <li><button role="tab" id="tab-migrations" aria-controls="view-migrations" aria-selected="false" tabindex="-1">Migrations</button></li>
              <li><button role="tab" id="tab-experiments" aria-controls="view-experiments" aria-selected="false" tabindex="-1">Simulator</button></li>
              <li><button role="tab" id="tab-playground" aria-controls="view-playground" aria-selected="false" tabindex="-1">Playground</button></li>
            </ul>
          </nav>
          <div id="who"><span id="role"></span> <span id="live" class="live"></span> <button id="signout" hidden>Sign out</button></div>
        </header>
        <main id="main" tabindex="-1">
          <section id="login" hidden aria-labelledby="login-title">
            <h2 id="login-title">Sign in</h2>
            <form id="login-form">
              <label for="key">API key</label>
              <input id="key" name="key" type="password" autocomplete="current-password" required>
              <button type="submit">Sign in</button>
              <p id="login-error" class="error" role="alert"></p>
              <p class="hint">An admin key can act on deployments and instances; any other key can look.</p>
            </form>
          </section>
          <section id="view-overview" role="tabpanel" aria-labelledby="tab-overview" hidden></section>
          <section id="view-residency" role="tabpanel" aria-labelledby="tab-residency" hidden></section>
          <section id="view-coldstarts" role="tabpanel" aria-labelledby="tab-coldstarts" hidden></section>
          <section id="view-instances" role="tabpanel" aria-labelledby="tab-instances" hidden></section>
          <section id="view-migrations" role="tabpanel" aria-labelledby="tab-migrations" hidden></section>
          <section id="view-experiments" role="tabpanel" aria-labelledby="tab-experiments" hidden></section>
          <section id="view-playground" role="tabpanel" aria-labelledby="tab-playground" hidden>
            <h2>Playground</h2>
            <form id="chat-form">
              <label for="chat-model">Deployment</label>
              <select id="chat-model" required></select>
              <label for="chat-prompt">Message</label>
              <textarea id="chat-prompt" rows="3" required>Say hello in five words.</textarea>
              <label for="chat-max">Most tokens</label>
              <input id="chat-max" type="number" min="1" max="4096" value="32">
              <button type="submit" id="chat-send">Send</button>
            </form>
            <h3>Answer</h3>
            <output id="chat-answer" aria-live="polite"></output>
            <dl id="chat-timings"></dl>
          </section>
        </main>
        <p id="notice" role="status" aria-live="polite"></p>
        </body>
        </html>
        """#

    static let style = #"""
        :root {
          --bg: #ffffff; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --panel: #f6f8fa;
          --accent: #0550ae; --ok: #116329; --bad: #a40e26; --warn: #7d4e00;
          --queue: #6e7781; --load: #0969da; --init: #8250df; --prefill: #bf3989; --fetch: #1a7f37;
          font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 15px;
        }
        * { box-sizing: border-box; }
        body { margin: 0; background: var(--bg); color: var(--fg); }
        a, button, select, input, textarea { font: inherit; }
        .skip { position: absolute; left: -1000px; }
        .skip:focus { left: 8px; top: 8px; background: var(--bg); padding: 4px; z-index: 2; }
        :focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
        header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; padding: 8px 16px;
          border-bottom: 1px solid var(--line); background: var(--panel); }
        header h1 { font-size: 1.2rem; margin: 0; }
        #version { font-size: 0.8rem; color: var(--muted); font-weight: normal; }
        #tabs { display: flex; flex-wrap: wrap; gap: 4px; list-style: none; margin: 0; padding: 0; }
        #tabs button { border: 1px solid var(--line); background: var(--bg); color: var(--fg);
          padding: 6px 10px; border-radius: 6px; cursor: pointer; min-height: 36px; }
        #tabs button[aria-selected="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
        #who { margin-left: auto; color: var(--muted); display: flex; gap: 8px; align-items: center; }
        .live::before { content: "●"; margin-right: 4px; }
        .live.on { color: var(--ok); } .live.off { color: var(--bad); }
        main { padding: 12px 16px; max-width: 1400px; }
        h2 { font-size: 1.1rem; margin: 8px 0; } h3 { font-size: 1rem; margin: 12px 0 6px; }
        .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 8px; }
        .card { border: 1px solid var(--line); border-radius: 6px; padding: 8px; background: var(--panel); }
        .card .value { font-size: 1.4rem; font-weight: 600; }
        .card .label { color: var(--muted); font-size: 0.85rem; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; margin: 4px 0 12px; }
        th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
        th { background: var(--panel); font-weight: 600; }
        td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        .ok { color: var(--ok); } .bad, .error { color: var(--bad); } .warn { color: var(--warn); }
        .muted, .hint { color: var(--muted); }
        .tier { display: inline-block; padding: 1px 6px; border-radius: 10px; border: 1px solid var(--line);
          margin: 1px; font-size: 0.85rem; background: var(--bg); }
        .tier.engine { border-color: var(--prefill); } .tier.dram { border-color: var(--load); }
        .tier.ssd { border-color: var(--queue); } .tier.remote, .tier.peer { border-color: var(--fetch); }
        svg text { fill: var(--fg); font-size: 11px; }
        .legend span { display: inline-flex; align-items: center; gap: 4px; margin-right: 12px; }
        .legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
        .swatch-queue { background: var(--queue); } .swatch-load { background: var(--load); }
        .swatch-init { background: var(--init); } .swatch-prefill { background: var(--prefill); }
        .swatch-rest { background: var(--muted); }
        .swatch-policy-0 { background: var(--load); } .swatch-policy-1 { background: var(--prefill); }
        .swatch-policy-2 { background: var(--fetch); } .swatch-policy-3 { background: var(--init); }
        .swatch-policy-4 { background: var(--warn); } .swatch-policy-5 { background: var(--queue); }
        .legend i.swatch-live { height: 0; border-top: 2px dashed var(--fg); border-radius: 0; }
        article.run { border-top: 1px solid var(--line); margin-top: 12px; }
        tr.live-row td { font-weight: 600; }
        figure.chart { margin: 0; max-width: 760px; }
        form { display: grid; gap: 6px; max-width: 640px; }
        form.inline { display: flex; flex-wrap: wrap; gap: 6px; align-items: end; max-width: none; }
        form.inline label { display: grid; gap: 2px; font-size: 0.85rem; }
        input, select, textarea { padding: 6px; border: 1px solid var(--muted); border-radius: 4px; background: var(--bg); color: var(--fg); min-height: 36px; }
        input[type="number"] { width: 6em; }
        button { padding: 6px 12px; border: 1px solid var(--accent); background: var(--accent); color: #fff;
          border-radius: 4px; cursor: pointer; min-height: 36px; }
        button.secondary { background: var(--bg); color: var(--accent); }
        button:disabled { opacity: 0.6; cursor: not-allowed; }
        #chat-answer { display: block; white-space: pre-wrap; border: 1px solid var(--line); border-radius: 6px;
          padding: 8px; min-height: 3em; background: var(--panel); }
        dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
        dt { color: var(--muted); } dd { margin: 0; }
        #notice { position: fixed; bottom: 8px; right: 8px; margin: 0; max-width: 90vw; }
        #notice:not(:empty) { background: var(--fg); color: var(--bg); padding: 8px 12px; border-radius: 6px; }
        @media (max-width: 600px) {
          header { padding: 8px; } main { padding: 8px; }
          #who { margin-left: 0; width: 100%; }
          th, td { padding: 4px; font-size: 0.85rem; }
        }
        @media (prefers-color-scheme: dark) {
          :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #30363d; --panel: #161b22;
            --accent: #4493f8; --ok: #3fb950; --bad: #f85149; --warn: #d29922; }
          #tabs button[aria-selected="true"], button { color: #0d1117; }
          button.secondary { color: var(--accent); }
        }
        """#
}
