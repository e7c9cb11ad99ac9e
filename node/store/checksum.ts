/**
 * Block checksums of object bodies: xxh32 (seed 0) of every `blockBytes` of the body, the last
 * block possibly shorter. xxh32 (native, @node-rs/xxhash) is about twice as fast as zlib's crc32
 * here, and block checksums are on the read path of every byte.
 */
import { Xxh32, xxh32 } from '@node-rs/xxhash';

export function blockChecksum(block: Uint8Array): number {
  return xxh32(block, 0) >>> 0;
}

/** Checksums of a body that arrives in pieces of any size. */
export class BlockChecksummer {
  readonly #blockBytes: number;
  readonly #state = new Xxh32(0);
  readonly #checksums: number[] = [];
  #fill = 0;

  constructor(blockBytes: number) {
    this.#blockBytes = blockBytes;
  }

  update(chunk: Uint8Array): void {
    let position = 0;
    while (position < chunk.length) {
      const take = Math.min(this.#blockBytes - this.#fill, chunk.length - position);
      if (this.#fill === 0 && take === this.#blockBytes) {
        // A whole block in one piece: one call.
        this.#checksums.push(blockChecksum(chunk.subarray(position, position + take)));
      } else {
        this.#state.update(chunk.subarray(position, position + take));
        this.#fill += take;
        if (this.#fill === this.#blockBytes) this.#closeBlock();
      }
      position += take;
    }
  }

  /** The checksums of every block, including a last partial one. */
  finish(): number[] {
    if (this.#fill > 0) this.#closeBlock();
    return this.#checksums;
  }

  #closeBlock(): void {
    this.#checksums.push(this.#state.digest() >>> 0);
    this.#state.reset(0);
    this.#fill = 0;
  }
}
