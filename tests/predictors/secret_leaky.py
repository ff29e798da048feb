"""A predictor that leaks its Secret every way a model can: printed (stdout and stderr, in
pieces), raised in the message, held in a chained exception's frames, returned as output, and
printed token-by-token as a stream. tests/test_secrets.py checks none of it survives."""
import sys

from cog import BasePredictor, Input, Secret


def _check(token: str) -> None:
    # the frame holds `token` as a local; the cause's message names it
    raise KeyError(f"rejected {token}")


class Predictor(BasePredictor):
    def predict(self, api_key: Secret = Input(description="A token"),
                mode: str = Input(default="print", choices=["print", "raise", "chain", "output"])) -> str:
        key = api_key.get_secret_value()
        if mode == "print":
            print(f"using key {key}")
            print(f"stderr {key}", file=sys.stderr)
            sys.stdout.write(key[:7])  # one secret in two writes
            sys.stdout.write(key[7:] + "\n")
            return "printed"
        if mode == "raise":
            raise ValueError(f"bad key {key}")
        if mode == "chain":
            try:
                _check(key)
            except KeyError as exc:
                raise RuntimeError("login failed") from exc
        return f"echo {key}"
