/**
 * Files the kernel sent once per bundle.
 *
 * A final bundle holds each image's bytes once: a single PNG output is the bundle's
 * `image/png`, and the prediction payload names it as `{"type": "file", "ref": "image/png"}`
 * with no `url`. `resolveRefs` turns such a file back into one with a data: URL read from
 * the bundle (a copy; the model's data is never changed), so the card renders it as any
 * other embedded file. A ref to a key that is not a base64 image in the bundle is left as is
 * (the card then shows a plain file row, never anything from an unchecked string).
 */

const IMAGE_KEY = /^image\/(png|jpeg|gif|webp)$/;
const BASE64 = /^[A-Za-z0-9+/=\s]*$/;

/** The payload with every `{"type":"file","ref":KEY}` given `url: data:KEY;base64,<bundle[KEY]>`. */
export function resolveRefs(value: unknown, bundle: Record<string, unknown>, depth = 0): unknown {
  if (depth > 32 || value === null || typeof value !== 'object') {
    return value;
  }
  if (Array.isArray(value)) {
    return value.map(v => resolveRefs(v, bundle, depth + 1));
  }
  const object = value as Record<string, unknown>;
  if (object.type === 'file' && typeof object.ref === 'string' && object.url === undefined) {
    const key = object.ref;
    const bytes = bundle[key];
    if (IMAGE_KEY.test(key) && typeof bytes === 'string' && BASE64.test(bytes)) {
      return { ...object, url: `data:${key};base64,${bytes.replace(/\s/g, '')}` };
    }
    return object;
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(object)) {
    out[k] = k === 'output' || depth > 0 ? resolveRefs(v, bundle, depth + 1) : v;
  }
  return out;
}
