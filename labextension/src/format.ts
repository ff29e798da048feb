/**
 * Number formatting shared by the card, the cell line and the status bar,
 * so the same cost reads the same everywhere.
 */

let currencyDecimals = 4;
const listeners = new Set<() => void>();

/** Set by the settings plugin; the card and the lines read it. */
export function setCurrencyDecimals(decimals: number): void {
  if (!Number.isFinite(decimals)) {
    return;
  }
  const next = Math.max(0, Math.min(10, Math.round(decimals)));
  if (next !== currencyDecimals) {
    currencyDecimals = next;
    listeners.forEach(listener => listener());
  }
}

/**
 * Call `listener` when the decimals change (cards rendered before the
 * settings loaded re-render). Returns the function that unsubscribes.
 */
export function onFormatChanged(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function getCurrencyDecimals(): number {
  return currencyDecimals;
}

/**
 * Dollars as the kernel side's `display.usd()` writes them, so the card, the
 * cell line, the status bar and the kernel's cost line read the same:
 * a cent or more with `decimals` decimals (`$0.0450`), less than a cent with
 * its significant digits (`$0.0003375`, up to 8 decimals), zero as `$0.00`.
 */
export function formatCost(usd: number, decimals: number = currencyDecimals): string {
  if (!Number.isFinite(usd)) {
    return '$?';
  }
  if (usd === 0) {
    return '$0.00';
  }
  if (Math.abs(usd) >= 0.01) {
    return `$${usd.toFixed(decimals)}`;
  }
  const text = usd.toFixed(8).replace(/0+$/, '');
  const fraction = text.split('.')[1] ?? '';
  return `$${fraction.length >= 2 ? text : usd.toFixed(2)}`;
}

/** Seconds the way a user reads them: `0.61 s`, `3.2 s`, `2 min 5 s`. */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) {
    return '? s';
  }
  if (seconds < 10) {
    return `${Number(seconds.toFixed(2))} s`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds - minutes * 60);
  return `${minutes} min ${rest} s`;
}

/** File sizes: `812 B`, `1.2 kB`, `3.4 MB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) {
    return '';
  }
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}
