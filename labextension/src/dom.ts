/**
 * The two DOM helpers every view of the extension uses, written once. Text
 * always goes in as `textContent` (never parsed as HTML), so a string from a
 * notebook can never become markup.
 */

/** A new `tag` element with `className` and `text` (as text). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A plain object (not null, not an array): what a notebook's JSON must be checked against. */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `content` over the page in a `className` dialog labelled `label`, until
 * Escape or a click on the backdrop (anywhere, with `clickAnywhere`) closes it.
 * Returns the function that closes it.
 */
export function showOverlay(className: string, label: string, content: HTMLElement, clickAnywhere: boolean): () => void {
  const overlay = el('div', className);
  overlay.setAttribute('role', 'dialog');
  overlay.setAttribute('aria-label', label);
  overlay.appendChild(content);
  const close = () => {
    overlay.remove();
    document.removeEventListener('keydown', onKey, true);
  };
  const onKey = (event: KeyboardEvent) => {
    if (event.key === 'Escape') {
      event.stopPropagation();
      close();
    }
  };
  overlay.addEventListener('click', event => {
    if (clickAnywhere || event.target === overlay) {
      close();
    }
  });
  document.addEventListener('keydown', onKey, true);
  document.body.appendChild(overlay);
  return close;
}
