/** Two connected in-memory byte streams whose bytes can be corrupted or dropped, seeded. */
import { Duplex } from 'node:stream';
import { prng } from './line-sim';


export interface NoiseOptions {
  seed: number;
  /** Probability that any one bit is flipped. */
  bitErrorRate?: number;
  /** Probability that any one byte is dropped. */
  dropRate?: number;
}

export interface NoiseStats {
  flipped: number;
  dropped: number;
}

function noisy(chunk: Buffer, random: () => number, o: NoiseOptions, stats: NoiseStats): Buffer {
  const out: number[] = [];
  const flipByte = 1 - (1 - (o.bitErrorRate ?? 0)) ** 8;
  for (const byte of chunk) {
    if (o.dropRate && random() < o.dropRate) {
      stats.dropped++;
      continue;
    }
    let b = byte;
    if (flipByte > 0 && random() < flipByte) {
      b ^= 1 << Math.floor(random() * 8);
      stats.flipped++;
    }
    out.push(b);
  }
  return Buffer.from(out);
}

/** A pair of duplexes: what one end writes, the other reads, through the noise. */
export function noisyPair(o: NoiseOptions): { a: Duplex; b: Duplex; stats: NoiseStats } {
  const random = prng(o.seed);
  const stats: NoiseStats = { flipped: 0, dropped: 0 };
  // eslint-disable-next-line prefer-const
  let a: Duplex, b: Duplex;
  const make = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, done) {
        const out = noisy(chunk, random, o, stats);
        setImmediate(() => {
          if (out.length > 0) peer().push(out);
          done();
        });
      },
      final(done) {
        peer().push(null);
        done();
      },
    });
  a = make(() => b);
  b = make(() => a);
  return { a, b, stats };
}
