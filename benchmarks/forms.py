"""Form cost: the time to build a form for a 30-input schema, and the widget (comm) traffic of
one Run from the form while a token-streaming model runs.

    python benchmarks/forms.py

Build time is the median of 30 builds in this process (schema and validator cached, as after a
model's first use); target ≤ 50 ms. Traffic is counted on IOPub of a real kernel: every
`comm_msg` / `comm_open` sent between the click and the final result of a run of a model that
streams 400 tokens, and the display updates that carry the tokens instead (throttled).
"""
from __future__ import annotations

import os
import statistics
import sys
import textwrap
import time

from cog import BasePredictor, Input, Path, Secret

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Thirty(BasePredictor):
    """30 inputs of every kind a form draws."""

    def predict(
        self,
        prompt: str = Input(description="What to draw", default="a red circle"),
        negative_prompt: str = Input(description="What not to draw", default=""),
        image: Path = Input(description="Init image", default=None),
        mask: Path = Input(description="Inpainting mask", default=None),
        width: int = Input(description="Width", default=512, ge=64, le=2048),
        height: int = Input(description="Height", default=512, ge=64, le=2048),
        num_outputs: int = Input(description="Images", default=1, ge=1, le=8),
        steps: int = Input(description="Denoising steps", default=30, ge=1, le=500),
        guidance_scale: float = Input(description="CFG scale", default=7.5, ge=1, le=50),
        strength: float = Input(description="Prompt strength", default=0.8, ge=0, le=1),
        seed: int = Input(description="Seed; blank = random", default=None),
        scheduler: str = Input(description="Sampler", default="DDIM", choices=["DDIM", "K_EULER", "PNDM", "DPM"]),
        refine: str = Input(description="Refiner", default="none", choices=["none", "expert", "base"]),
        high_noise_frac: float = Input(description="Noise fraction", default=0.8, ge=0, le=1),
        refine_steps: int = Input(description="Refine steps", default=None),
        watermark: bool = Input(description="Add a watermark", default=True),
        safety: bool = Input(description="Safety checker", default=True),
        lora_scale: float = Input(description="LoRA scale", default=0.6, ge=0, le=1),
        lora_weights: str = Input(description="LoRA weights URL", default=None),
        style: str = Input(description="Style preset", default="none", choices=["none", "photo", "anime", "ink"]),
        eta: float = Input(description="DDIM eta", default=0.0),
        clip_skip: int = Input(description="CLIP layers to skip", default=0, ge=0, le=4),
        tile: bool = Input(description="Tileable output", default=False),
        upscale: int = Input(description="Upscale factor", default=1, choices=[1, 2, 4]),
        output_format: str = Input(description="File format", default="png", choices=["png", "webp", "jpg"]),
        output_quality: int = Input(description="Quality", default=90, ge=0, le=100),
        caption: str = Input(description="Caption text", default="", max_length=80),
        tags: str = Input(description="Comma separated tags", default="", regex=r"^[a-z, ]*$"),
        api_token: Secret = Input(description="Token for the LoRA host", default=None),
        notes: str = Input(description="Free notes", default=None),
    ) -> str:
        return prompt


def build_time(n: int = 30) -> tuple[float, int]:
    from replicate_jupyter.notebook.forms import form

    form(Thirty)  # warm: schema and validator are built once per model
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f = form(Thirty)
        times.append(time.perf_counter() - t)
    return statistics.median(times), len(f.fields)


def full_build_time(n: int = 30) -> float:
    """The same with the folded "Advanced inputs" opened (their widgets made too)."""
    from replicate_jupyter.notebook.forms import form

    times = []
    for _ in range(n):
        t = time.perf_counter()
        form(Thirty).build_advanced()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def comm_traffic(tokens: int = 400) -> dict:
    """Run the tokens predictor from a form in a real kernel and count IOPub messages."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=ROOT)
    try:
        def run(code: str, timeout: float = 120) -> list[dict]:
            msg_id = kc.execute(code)
            msgs = []
            while True:
                m = kc.get_iopub_msg(timeout=timeout)
                msgs.append(m)
                if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                        and m["content"]["execution_state"] == "idle"):
                    return msgs

        run(textwrap.dedent(f"""
            import replicate_jupyter as rj
            f = rj.form("tests/predictors/tokens.py:Predictor")
            f.fields["n"].widget.value = {tokens}
            f.fields["delay"].widget.value = 0.005
            display(f)
        """))
        msgs = run("f.run_button.click(); p = f.wait(120); print(p.status, len(p.output))")
        kinds: dict[str, int] = {}
        for m in msgs:
            kinds[m["msg_type"]] = kinds.get(m["msg_type"], 0) + 1
        status = "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream").strip()
        return {"tokens": tokens, "result": status, "comm_msg": kinds.get("comm_msg", 0),
                "comm_open": kinds.get("comm_open", 0),
                "update_display_data": kinds.get("update_display_data", 0), "all": kinds}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> None:
    sys.path.insert(0, ROOT)
    t, n = build_time()
    print(f"build a form for a {n}-input schema: {t * 1000:.1f} ms median (target ≤ 50 ms)")
    print(f"  … with all {n} fields' widgets made (Advanced inputs opened): {full_build_time() * 1000:.1f} ms median")
    c = comm_traffic()
    print(f"one Run streaming {c['tokens']} tokens ({c['result']}): {c['comm_msg']} comm_msg + "
          f"{c['comm_open']} comm_open widget messages; {c['update_display_data']} display updates "
          f"carry the tokens (throttled)")


if __name__ == "__main__":
    main()
