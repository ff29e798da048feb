from cog import Input, current_scope


def run(name: str = Input(description="Who to greet", default="world")) -> str:
    scope = current_scope()
    scope.record_metric("greetings", 1, mode="incr")
    context = scope.context
    who = context.get("user", "nobody")
    return f"hello {name}, from {who} ({len(context)} context keys)"
