/**
 * A prediction's output, classified for rendering: media (data: URLs of the
 * matching type only), file links (http, https or data: only), text and JSON.
 * Pure functions with no DOM, shared by the card and the compare view (and
 * unit-tested in node), so both read an output the same way.
 */
import { isObject } from './dom';
import { IFileValue } from './types';

export type MediaKind = 'image' | 'audio' | 'video';

/** An output item, classified for rendering. */
export type OutputItem =
  | { kind: MediaKind; url: string; name: string; size: number | null; contentType: string }
  | { kind: 'file'; url: string | null; name: string; size: number | null; contentType: string }
  | { kind: 'text'; text: string }
  | { kind: 'json'; value: unknown };

const DATA_URL = /^data:([a-z]+)\/([a-z0-9.+-]+)((;[a-z0-9=.+-]+)*)(;base64)?,/i;

/** `url` if it is a data: URL whose media type is `kind`/*, else null. */
export function safeMediaUrl(url: unknown, kind: MediaKind): string | null {
  if (typeof url !== 'string') {
    return null;
  }
  const match = DATA_URL.exec(url);
  return match && match[1].toLowerCase() === kind ? url : null;
}

/** `url` if it is fine as a link target (http, https or data:), else null. */
export function safeLinkUrl(url: unknown): string | null {
  if (typeof url !== 'string') {
    return null;
  }
  return /^(https?:\/\/|data:)/i.test(url.trim()) ? url.trim() : null;
}

/** A `{"type": "file", ...}` value of a payload. */
export function isFile(value: unknown): value is IFileValue {
  return isObject(value) && value.type === 'file';
}

function mediaKindOf(contentType: string): MediaKind | null {
  const major = contentType.split('/')[0].toLowerCase();
  return major === 'image' || major === 'audio' || major === 'video' ? major : null;
}

function fileItem(file: IFileValue): OutputItem {
  const url = typeof file.url === 'string' ? file.url : null;
  let contentType = typeof file.content_type === 'string' ? file.content_type : '';
  if (!contentType && url) {
    const match = DATA_URL.exec(url);
    contentType = match ? `${match[1]}/${match[2]}` : '';
  }
  const name = typeof file.name === 'string' && file.name ? file.name : 'output';
  const size = typeof file.size === 'number' && Number.isFinite(file.size) ? file.size : null;
  const kind = mediaKindOf(contentType);
  if (kind && url && safeMediaUrl(url, kind)) {
    return { kind, url, name, size, contentType };
  }
  return { kind: 'file', url: safeLinkUrl(url), name, size, contentType };
}

function itemOf(value: unknown): OutputItem | null {
  if (value === null || value === undefined) {
    return null;
  }
  if (isFile(value)) {
    return fileItem(value);
  }
  if (typeof value === 'string') {
    const media = DATA_URL.exec(value);
    if (media) {
      return fileItem({ type: 'file', url: value, content_type: `${media[1]}/${media[2]}` });
    }
    return { kind: 'text', text: value };
  }
  if (typeof value === 'number' || typeof value === 'boolean') {
    return { kind: 'text', text: String(value) };
  }
  return { kind: 'json', value };
}

/**
 * A prediction's output as a list of items. Consecutive text items are
 * joined: with `output_display: "concatenate"` (streamed tokens) without a
 * separator, otherwise one per line.
 */
export function outputItems(output: unknown, outputDisplay: unknown): OutputItem[] {
  const raw = Array.isArray(output) ? output : [output];
  const separator = outputDisplay === 'concatenate' ? '' : '\n';
  const items: OutputItem[] = [];
  for (const value of raw) {
    const item = itemOf(value);
    if (!item) {
      continue;
    }
    const last = items[items.length - 1];
    if (item.kind === 'text' && last && last.kind === 'text') {
      last.text += separator + item.text;
    } else {
      items.push(item);
    }
  }
  return items;
}

