/**
 * The token text, `<prefix>_<body><checksum>`, checked offline exactly as keyward's own
 * `keyward-core/src/format.rs` does, so garbage never costs a round trip:
 *
 * - prefix: `[a-z][a-z0-9]{1,15}`;
 * - body: 43 base62 characters (256 random bits);
 * - checksum: CRC32 (IEEE) of everything before it, as 6 fixed-width base62 digits.
 *
 * These constants are keyward's wire format: if one differs from the server's, every real token
 * is refused here as malformed. The test vector in `test/format.test.ts` pins them.
 */

/** The base62 alphabet, in keyward's order (digits, upper case, lower case). */
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN = 6;
// Prefix, separator, then body and checksum: 43 + 6 = 49 base62 characters.
const SHAPE = /^[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{49}$/;

const CRC_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC32 (IEEE 802.3, the one zlib and crc32fast compute) of an ASCII string. */
function crc32(ascii: string): number {
  let crc = 0xffffffff;
  for (let i = 0; i < ascii.length; i++) {
    crc = (CRC_TABLE[(crc ^ ascii.charCodeAt(i)) & 0xff] as number) ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function checksumOf(prefixAndBody: string): string {
  let crc = crc32(prefixAndBody);
  let out = "";
  for (let i = 0; i < CHECKSUM_LEN; i++) {
    out = ALPHABET[crc % 62] + out;
    crc = Math.floor(crc / 62);
  }
  return out;
}

/**
 * Whether `token` has the shape and checksum of a keyward token (any prefix). A random string
 * passes once in 2^32; a typo or a truncated token never does.
 */
export function isWellFormedToken(token: string): boolean {
  if (!SHAPE.test(token)) return false;
  const split = token.length - CHECKSUM_LEN;
  // Both sides come from the caller's own input: nothing secret is compared here.
  return checksumOf(token.slice(0, split)) === token.slice(split);
}
