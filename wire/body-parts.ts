/**
 * A frame body to send, in parts: a payload message's head and its data as
 * they came from the pipe or the file. Tagging, the CRC and COBS each take the
 * parts in order, so a body is never joined before it is framed (joining it
 * cost a copy of every payload byte).
 */
export type BodyParts = readonly Uint8Array[];

/** `body` as parts (one buffer is one part). */
export function bodyParts(body: Uint8Array | BodyParts): BodyParts {
  return body instanceof Uint8Array ? [body] : body;
}

/** The body's length in bytes. */
export function bodyLength(body: BodyParts): number {
  let length = 0;
  for (const part of body) length += part.length;
  return length;
}

/** The body in one buffer (a view when it is one part): for deflate, which takes one buffer. */
export function joinBody(body: BodyParts): Buffer {
  if (body.length === 1) return Buffer.from(body[0].buffer, body[0].byteOffset, body[0].length);
  return Buffer.concat(body);
}
