"""Mutants of the play guards, merged into tests/mutants.py (same format: name -> (file, original, mutated, tests, what))."""

T = "tests/test_play.py::"
CROSS_SITE = T + "test_a_cross_site_origin_is_refused_before_the_upgrade"
FOREIGN_HOST = T + "test_a_foreign_host_is_refused_on_every_route"
CAP = T + "test_the_session_cap_refuses_the_next_tab_and_a_closed_tab_frees_its_slot"
BUDGET = T + "test_the_cell_budget_refuses_a_world_that_does_not_fit"
BAD = T + "test_bad_messages_get_an_error_frame_and_the_session_goes_on"
WARNED = T + "test_a_non_loopback_host_is_warned_about"
GROWING = "tests/test_play_growing.py::"

MUTANTS = {
    "play-origin-check-removed": (
        "fastca/play.py", '        if origin is not None and origin.lower() != f"http://{host}".lower():\n',
        "        if False:\n", [CROSS_SITE + "[http://evil.example]"],
        "play: any web page's websocket is accepted (no Origin check)"),
    "play-origin-flipped": (
        "fastca/play.py", '        if origin is not None and origin.lower() != f"http://{host}".lower():\n',
        '        if origin is not None and origin.lower() == f"http://{host}".lower():\n',
        [T + "test_the_own_origin_and_loopback_names_are_accepted"],
        "play: the Origin comparison inverted (the page itself refused, other sites let in)"),
    "play-origin-host-name-only": (
        "fastca/play.py", '        if origin is not None and origin.lower() != f"http://{host}".lower():\n',
        '        if origin is not None and _hostname(origin.split("//")[-1]) not in self.hosts:\n',
        [CROSS_SITE + "[http://127.0.0.1:1]"],
        "play: only the Origin's host name is checked (another local server's page, or https, gets in)"),
    "play-origin-prefix": (
        "fastca/play.py", '        if origin is not None and origin.lower() != f"http://{host}".lower():\n',
        '        if origin is not None and not origin.lower().startswith(f"http://{host}".lower()):\n',
        [CROSS_SITE + "[http://{host}.evil.example]"],
        "play: the Origin only has to start with the server's (http://127.0.0.1:8765.evil.example gets in)"),
    "play-guard-only-on-websocket": (
        "fastca/play.py", "            reason = self.refusal(request.headers)\n            if reason:\n",
        '            reason = self.refusal(request.headers)\n            if reason and request.path == "/ws":\n',
        [CROSS_SITE + "[http://evil.example]"],
        "play: the page and its script are served to other sites and rebound names (only the websocket checked)"),
    "play-host-check-removed": (
        "fastca/play.py", "        if name not in self.hosts and not (self.any_ip and _is_ip(name)):\n",
        "        if False:\n", [FOREIGN_HOST + "[evil.example:{port}]"],
        "play: any Host accepted (a DNS-rebinding page, same-origin with itself, drives the server)"),
    "play-host-prefix": (
        "fastca/play.py", "        if name not in self.hosts and not (self.any_ip and _is_ip(name)):\n",
        "        if not any(name.startswith(h) for h in self.hosts) and not (self.any_ip and _is_ip(name)):\n",
        [FOREIGN_HOST + "[localhost.evil.example:{port}]"],
        "play: a Host only has to start with a server name (localhost.evil.example gets in)"),
    "play-any-ip-always": (
        "fastca/play.py", '        self.any_ip = host.strip("[]") in ("", "0.0.0.0", "::")',
        "        self.any_ip = True", [T + "test_hosts_a_server_answers_to"],
        "play: a loopback server answers to any IP address in Host"),
    "play-session-cap-off-by-one": (
        "fastca/play.py", "        if len(self.sessions) >= self.max_sessions:\n",
        "        if len(self.sessions) > self.max_sessions:\n", [CAP],
        "play: one session more than max_sessions is served"),
    "play-cap-after-the-world-is-built": (
        "fastca/play.py",
        "        reason = self._reserve(ws)  # before any world is built: a refused tab costs nothing\n"
        "        if reason:\n"
        "            return await self._refuse(ws, reason)\n"
        "        worker = _Worker()\n"
        "        try:\n"
        "            session = await worker.call(Session, self.size, self.model_name, self.backend)\n",
        "        worker = _Worker()\n"
        "        try:\n"
        "            session = await worker.call(Session, self.size, self.model_name, self.backend)\n"
        "            reason = self._reserve(ws)\n"
        "            if reason:\n"
        "                return await self._refuse(ws, reason)\n",
        [CAP], "play: the cap is checked after the tab's world is built (a refused tab still costs a world)"),
    "play-closed-tab-keeps-its-slot": (
        "fastca/play.py", "            self.sessions.pop(ws, None)  # frees the tab's slot and cells\n",
        "            self.sessions.get(ws)  # (kept)\n", [CAP], "play: a closed tab's slot and cells are never freed"),
    "play-cell-budget-off": (
        "fastca/play.py", "        if sum(self.sessions.values()) + cells > self.max_cells:\n", "        if False:\n",
        [BUDGET], "play: a new tab's world is not counted against max_cells"),
    "play-resize-unchecked": (
        "fastca/play.py",
        '                    self._resize(ws, world_size(msg.get("size")))  # before the world is built\n',
        '                    world_size(msg.get("size"))  # (not counted)\n', [BUDGET],
        "play: a 'size' message builds a world beyond max_cells"),
    "play-oversize-message-closes-the-tab": (
        "fastca/play.py", "max_msg_size=MAX_WS_MESSAGE,", "max_msg_size=4 * MAX_MESSAGE,", [BAD + "[1mb]"],
        "play: a 1 MB message exceeds aiohttp's limit and closes the tab instead of an error frame"),
    "play-model-name-type-unchecked": (
        "fastca/play.py", "    if not isinstance(name, str) or name not in MODELS:\n",
        "    if name not in MODELS:\n", [BAD + "[model-list]"],
        "play: a list as model name raises TypeError (a traceback in the log, not a plain error frame)"),
    "play-model-name-any-string": (
        "fastca/play.py", "    if not isinstance(name, str) or name not in MODELS:\n"
        "        raise BadMessage(f\"model must be one of {list(MODELS)}, got {name!r}\")\n    return MODELS[name]\n",
        "    if not isinstance(name, str):\n"
        "        raise BadMessage(f\"model must be one of {list(MODELS)}, got {name!r}\")\n"
        "    return MODELS.get(name, \"digits\")\n",
        [GROWING + "test_bad_growing_messages_get_an_error_and_the_session_goes_on[model-path]"],
        "play: any string from the page reaches fastca.pretrained as a model name (not the fixed list)"),
    "play-message-for-the-other-kind": (
        "fastca/play.py", "        if kind in ONLY[other]:\n", "        if False:\n",
        [GROWING + "test_bad_growing_messages_get_an_error_and_the_session_goes_on[stroke]"],
        "play: a digit message reaches a growing world (no host picture there: a traceback, not a plain error)"),
    "play-model-switch-unbudgeted": (
        "fastca/play.py",
        "                    size = model_size(msg.get(\"name\"), session.kind, session.side, fits=self._fits(ws))\n",
        "                    size = model_size(msg.get(\"name\"), session.kind, session.side)\n",
        [GROWING + "test_the_model_switch_restarts_the_world_within_the_cell_budget"],
        "play: switching to the growing model builds its default world beyond max_cells"),
    "play-growing-seed-ignored": (
        "fastca/play.py", "            self.sim.edit(\"seed\", center=(size // 2, size // 2))\n", "            pass\n",
        [GROWING + "test_the_growing_model_starts_with_a_seed_in_the_middle"],
        "play: the growing world starts empty (nothing on the page until a click)"),
    "play-ctrl-c-escapes-serve": (
        "fastca/play.py", "    except KeyboardInterrupt:\n        pass\n    print(", "    except ZeroDivisionError:\n"
        "        pass\n    print(", [T + "test_serve_returns_cleanly_on_ctrl_c"],
        "play: Ctrl-C before the server is up (or twice) escapes serve with a traceback"),
    "play-session-worker-not-daemon": (
        "fastca/play.py", 'daemon=True, name="fastca-play-session"', 'daemon=False, name="fastca-play-session"',
        [T + "test_ctrl_c_twice_while_a_step_runs_stops_at_once_without_a_traceback"],
        "play: the exit waits for a step in flight, and a second Ctrl-C meanwhile prints a traceback"),
    "play-no-exposure-warning": (
        "fastca/play.py", "    if is_loopback(host):\n        return\n", "    if True:\n        return\n",
        [WARNED + "[0.0.0.0-True]"], "play: no warning when the server listens beyond loopback"),
    "play-page-drops-the-refusal": (
        "fastca/assets/play/play.js", "      state.refused = msg.message;\n", "      state.refusedX = msg.message;\n",
        ["tests/test_play_browser.py::test_a_full_server_tells_the_page_why_and_a_closed_tab_frees_its_place"],
        "page: a refused tab does not keep the reason on screen (needs Chromium: the test skips without it)"),
    "play-cli-ctrl-c-escapes": (
        "fastca/cli/play.py", "    except KeyboardInterrupt:  # Ctrl-C before the server is up (serve handles it later)\n",
        "    except ZeroDivisionError:  # (mutant)\n", [T + "test_fastca_play_stops_cleanly_on_ctrl_c_before_serving"],
        "CLI: Ctrl-C while fastca play starts up (backend probe) prints a traceback"),
    "play-cli-max-sessions-zero": (
        "fastca/cli/play.py", "    if args.max_sessions < 1:\n", "    if args.max_sessions < 0:\n",
        [T + "test_play_options_are_validated"], "CLI: --max-sessions 0 accepted (a server that refuses every tab)"),
}
