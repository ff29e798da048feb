"""The fixed per-cell cost of `%%replicate` and its final draw, cut without changing what a
notebook shows: in a real kernel (nbclient, the saved notebook), outputs keep their order."""
from __future__ import annotations

import json

from kernel_helpers import PREDICTORS, outputs_of

TOKENS = f"{PREDICTORS}/tokens.py:Predictor"
MIME = "application/vnd.replicate.prediction+json"


def kinds(cell) -> list[str]:
    """Each output of a saved cell as `stream:<name>:<text>` or `display:<output text>`."""
    out = []
    for o in outputs_of(cell):
        if o["output_type"] == "stream":
            out.append(f"stream:{o['name']}:{o['text']}")
        elif MIME in o.get("data", {}):
            out.append("display:" + "".join(o["data"][MIME]["output"]))
    return out


def test_prints_before_and_after_a_run_keep_their_order_with_its_display(run_cells):
    cell = ("import sys\n"
            "print('before')\n"
            "sys.stderr.write('err before\\n')\n"
            f"get_ipython().run_cell_magic('replicate', {TOKENS!r}, 'prompt: go\\nn: 3\\ndelay: 0')\n"
            "print('after')\n"
            "sys.stdout.flush()\n"  # nothing pending now: the next display's flush is skipped
            f"get_ipython().run_cell_magic('replicate', {TOKENS!r}, 'prompt: go\\nn: 2\\ndelay: 0')\n"
            "print('last')")
    nb = run_cells(["%load_ext replicate_jupyter", cell])
    # the stream text of one print may merge with the next of its stream: join per run of kind
    assert kinds(nb.cells[1]) == ["stream:stdout:before\n", "stream:stderr:err before\n",
                                  "display:t0 t1 t2 ", "stream:stdout:after\n", "display:t0 t1 ",
                                  "stream:stdout:last\n"]


def test_a_display_flushes_only_the_streams_with_output_pending(run_cells):
    cell = ("import sys, json\n"
            "from IPython.display import display\n"
            "calls = []\n"
            "for s in (sys.stdout, sys.stderr):\n"
            "    s.flush = (lambda s, f: lambda: (calls.append(s.name), f())[1])(s, s.flush)\n"
            "seen = []\n"
            "display({'text/plain': 'x'}, raw=True); seen.append(list(calls)); calls.clear()\n"
            "print('p'); display({'text/plain': 'y'}, raw=True); seen.append(list(calls)); calls.clear()\n"
            "sys.stderr.write('e'); display({'text/plain': 'z'}, raw=True); seen.append(list(calls)); calls.clear()\n"
            "get_ipython().run_line_magic('unload_ext', 'replicate_jupyter')\n"
            "display({'text/plain': 'w'}, raw=True); seen.append(list(calls)); calls.clear()\n"
            "del sys.stdout.flush, sys.stderr.flush\n"
            "sys.__stdout__.write(json.dumps(seen))\n"
            "print('SEEN' + json.dumps(seen))")
    nb = run_cells(["%load_ext replicate_jupyter", cell])
    text = "".join(o.get("text", "") for o in outputs_of(nb.cells[1]) if o["output_type"] == "stream")
    seen = json.loads(text.split("SEEN", 1)[1])
    # nothing pending: no flush; then only the stream written to; unloaded: ipykernel's own (both)
    assert seen == [[], ["stdout"], ["stderr"], ["stdout", "stderr"]]


def _wait_until(cond, limit: float = 10.0) -> bool:
    import time

    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_a_lingering_ticker_takes_a_new_display_without_a_wake_up_and_still_draws_it_on_time():
    import time

    from replicate_jupyter.notebook import live as live_mod
    from replicate_jupyter.prediction.events import Completed, Output, Started
    from replicate_jupyter.prediction.prediction import Prediction

    ticker = live_mod._Ticker(linger=30.0)
    old, live_mod._TICKER = live_mod._TICKER, ticker
    try:
        def running(sent: list) -> tuple[Prediction, live_mod.LiveDisplay]:
            p = Prediction("test/stream", {})
            return p, live_mod.LiveDisplay(p, text_rate=20, preview_rate=4, publish=sent.append).attach()

        first: list[dict] = []
        p, _ = running(first)  # starts the thread
        p.emit(Completed(status="succeeded", metrics={"predict_time": 0.0}))
        assert _wait_until(lambda: ticker._wake_at != float("inf"))  # lingering at 20/s
        sent: list[dict] = []
        p, live = running(sent)
        assert ticker.wakes == 0  # its first draw falls after the ticker's next wake: no notify
        p.emit(Started(hardware="cpu"))
        p.emit(Output(value="a"))
        assert _wait_until(lambda: len(sent) >= 1)  # drawn live by the ticker, not only at the end
        assert sent[0]["application/vnd.replicate.prediction+json"]["status"] == "processing"
        p.emit(Completed(status="succeeded", metrics={"predict_time": 0.1}))
        assert sent[-1]["application/vnd.replicate.prediction+json"]["status"] == "succeeded"

        ticker.linger = 0.0  # past the linger: asleep for good, and a new display wakes it
        assert _wait_until(lambda: ticker._wake_at == float("inf") and not ticker._live)
        time.sleep(0.1)  # the thread is in its untimed wait (it set _wake_at under the lock first)
        more: list[dict] = []
        p, _ = running(more)
        assert ticker.wakes == 1
        p.emit(Started(hardware="cpu"))
        assert _wait_until(lambda: len(more) >= 1)
        p.emit(Completed(status="succeeded", metrics={"predict_time": 0.1}))
    finally:
        live_mod._TICKER = old


def test_a_final_only_draw_has_no_display_id_and_a_live_one_updates_its_own():
    from jupyter_client.manager import start_new_kernel
    from kernel_helpers import ROOT

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        def iopub(code: str) -> list[dict]:
            msg_id, msgs = kc.execute(code), []
            while True:
                m = kc.get_iopub_msg(timeout=60)
                if m["parent_header"].get("msg_id") == msg_id:
                    msgs.append(m)
                    if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                        break
            assert kc.get_shell_msg(timeout=60)["content"]["status"] == "ok"
            return [m for m in msgs if MIME in m["content"].get("data", {})]

        iopub("%load_ext replicate_jupyter")
        short = iopub(f"%%replicate {TOKENS}\nprompt: go\nn: 3\ndelay: 0")
        # the cell's value is one line (its card shows already); the card itself: one message
        assert [m["msg_type"] for m in short] == ["display_data"]
        assert "display_id" not in short[0]["content"]["transient"]
        long = iopub(f"%%replicate {TOKENS}\nprompt: go\nn: 6\ndelay: 0.05")
        kinds = [m["msg_type"] for m in long]
        assert kinds[0] == "display_data" and kinds[-1] == "update_display_data" and len(kinds) >= 2
        ids = {m["content"]["transient"].get("display_id") for m in long}
        assert len(ids) == 1 and None not in ids
        assert long[-1]["content"]["data"][MIME]["status"] == "succeeded"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
