/** Drives a MetadataStateMachine with commands as a consensus log would (one entry each). */
import { createHash, randomBytes } from 'node:crypto';
import { type KvStore, MemoryKv } from '../../node/metadata/kv.ts';
import { type Command, commandCodec, METADATA_LEVEL, type Result } from '../../node/metadata/records.ts';
import { MetadataStateMachine } from '../../node/metadata/state-machine.ts';

export const id = (): Uint8Array => new Uint8Array(randomBytes(16));
export const sha256 = (text: string): Uint8Array =>
  new Uint8Array(createHash('sha256').update(text).digest());

export class Harness {
  readonly machine: MetadataStateMachine;
  readonly rootId: Uint8Array;
  readonly lostFoundId: Uint8Array;
  timeMs = 1_700_000_000_000;

  private constructor(machine: MetadataStateMachine, rootId: Uint8Array, lostFoundId: Uint8Array) {
    this.machine = machine;
    this.rootId = rootId;
    this.lostFoundId = lostFoundId;
  }

  static async create(
    kv: KvStore = new MemoryKv(),
    ids?: { root: Uint8Array; lostFound: Uint8Array },
    /** The cell's metadata level (a new cell's: this software's). */
    level = METADATA_LEVEL,
  ): Promise<Harness> {
    const machine = await MetadataStateMachine.open(kv);
    const harness = new Harness(machine, ids?.root ?? id(), ids?.lostFound ?? id());
    const result = await harness.run({
      initCell: {
        cell: 'test',
        rootId: harness.rootId,
        uid: 0,
        gid: 0,
        mode: 0o755,
        lostFoundId: harness.lostFoundId,
        level,
      },
    });
    if (result.code !== 'OK') throw new Error(`init failed: ${result.message}`);
    return harness;
  }

  async run(command: Omit<Command, 'timeMs'> & { timeMs?: number }): Promise<Result> {
    this.timeMs += 1;
    const data = commandCodec.encode({ timeMs: this.timeMs, ...command });
    const [result] = await this.machine.apply([{ index: this.machine.appliedIndex + 1, data }]);
    return result!;
  }

  async runBatch(commands: Array<Omit<Command, 'timeMs'>>): Promise<Result[]> {
    const base = this.machine.appliedIndex;
    return this.machine.apply(
      commands.map((command, i) => {
        this.timeMs += 1;
        return { index: base + i + 1, data: commandCodec.encode({ timeMs: this.timeMs, ...command }) };
      }),
    );
  }

  mkdir(parent: Uint8Array, name: string, newId = id()): Promise<Result> {
    return this.run({
      create: { parent, name, id: newId, type: 'DIRECTORY', mode: 0o755, uid: 1000, gid: 1000 },
    });
  }

  createFile(parent: Uint8Array, name: string, newId = id()): Promise<Result> {
    return this.run({ create: { parent, name, id: newId, type: 'FILE', mode: 0o644, uid: 1000, gid: 1000 } });
  }

  async names(parent: Uint8Array): Promise<string[]> {
    const names: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.machine.readdir(parent, { after, limit: 3 });
      if (page.length === 0) return names;
      names.push(...page.map((entry) => entry.name));
      after = page.at(-1)!.name;
    }
  }
}
