def times(x: int, k: int) -> int:
    return x * k
