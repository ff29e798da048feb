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
