/**
 * Property test: random namespace operations on the state machine and on a small reference model
 * of POSIX directory semantics must succeed or fail alike and leave the same tree.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Harness, id } from './harness.ts';

interface ModelNode {
  type: 'FILE' | 'DIRECTORY';
  children: Map<string, string>;
  nlink: number;
}

class Model {
  readonly nodes = new Map<string, ModelNode>();
  readonly root: string;
  constructor(root: string, lostFound: string) {
    this.root = root;
    this.nodes.set(root, { type: 'DIRECTORY', children: new Map([['lost+found', lostFound]]), nlink: 3 });
    this.nodes.set(lostFound, { type: 'DIRECTORY', children: new Map(), nlink: 2 });
  }
  dirs(): string[] {
    return [...this.nodes].filter(([, node]) => node.type === 'DIRECTORY').map(([key]) => key);
  }
  #within(candidate: string, ancestor: string): boolean {
    if (candidate === ancestor) return true;
    const node = this.nodes.get(ancestor)!;
    return [...node.children.values()].some(
      (child) => this.nodes.get(child)?.type === 'DIRECTORY' && this.#within(candidate, child),
    );
  }
  create(parent: string, name: string, key: string, type: ModelNode['type']): boolean {
    const dir = this.nodes.get(parent)!;
    if (dir.children.has(name)) return false;
    dir.children.set(name, key);
    this.nodes.set(key, { type, children: new Map(), nlink: type === 'DIRECTORY' ? 2 : 1 });
    if (type === 'DIRECTORY') dir.nlink++;
    return true;
  }
  #drop(key: string): void {
    const node = this.nodes.get(key)!;
    node.nlink = node.type === 'DIRECTORY' ? 0 : node.nlink - 1;
    if (node.nlink === 0) this.nodes.delete(key);
  }
  remove(parent: string, name: string, directory: boolean): boolean {
    const dir = this.nodes.get(parent)!;
    const key = dir.children.get(name);
    if (key === undefined) return false;
    const node = this.nodes.get(key)!;
    if ((node.type === 'DIRECTORY') !== directory) return false;
    if (node.children.size > 0) return false;
    dir.children.delete(name);
    if (directory) dir.nlink--;
    this.#drop(key);
    return true;
  }
  link(parent: string, name: string, target: string): boolean {
    const node = this.nodes.get(target);
    const dir = this.nodes.get(parent)!;
    if (node === undefined || node.type === 'DIRECTORY' || dir.children.has(name)) return false;
    dir.children.set(name, target);
    node.nlink++;
    return true;
  }
  rename(parent: string, name: string, newParent: string, newName: string): boolean {
    const from = this.nodes.get(parent)!;
    const to = this.nodes.get(newParent)!;
    const key = from.children.get(name);
    if (key === undefined) return false;
    const source = this.nodes.get(key)!;
    const targetKey = to.children.get(newName);
    if (targetKey === key) return true;
    if (source.type === 'DIRECTORY' && this.#within(newParent, key)) return false;
    if (targetKey !== undefined) {
      const target = this.nodes.get(targetKey)!;
      if ((source.type === 'DIRECTORY') !== (target.type === 'DIRECTORY')) return false;
      if (target.children.size > 0) return false;
      to.children.delete(newName);
      if (target.type === 'DIRECTORY') to.nlink--;
      this.#drop(targetKey);
    }
    from.children.delete(name);
    to.children.set(newName, key);
    if (source.type === 'DIRECTORY' && parent !== newParent) {
      from.nlink--;
      to.nlink++;
    }
    return true;
  }
}

const names = ['a', 'b', 'c', 'dd'];
const operation = fc.oneof(
  fc.record({
    op: fc.constant('create' as const),
    dir: fc.nat({ max: 7 }),
    name: fc.constantFrom(...names),
    directory: fc.boolean(),
  }),
  fc.record({
    op: fc.constant('remove' as const),
    dir: fc.nat({ max: 7 }),
    name: fc.constantFrom(...names),
    directory: fc.boolean(),
  }),
  fc.record({
    op: fc.constant('link' as const),
    dir: fc.nat({ max: 7 }),
    name: fc.constantFrom(...names),
    target: fc.nat({ max: 7 }),
  }),
  fc.record({
    op: fc.constant('rename' as const),
    dir: fc.nat({ max: 7 }),
    name: fc.constantFrom(...names),
    newDir: fc.nat({ max: 7 }),
    newName: fc.constantFrom(...names),
  }),
);

const hexOf = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'));

async function listing(h: Harness, directory: Uint8Array, prefix = ''): Promise<string[]> {
  const lines: string[] = [];
  for (const name of await h.names(directory)) {
    const inode = (await h.machine.lookup(directory, name))!;
    lines.push(`${prefix}${name} ${inode.type} nlink=${inode.nlink}`);
    if (inode.type === 'DIRECTORY') lines.push(...(await listing(h, inode.id, `${prefix}${name}/`)));
  }
  return lines;
}

function modelListing(model: Model, key: string, prefix = ''): string[] {
  const lines: string[] = [];
  const node = model.nodes.get(key)!;
  const sorted = [...node.children].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const [name, child] of sorted) {
    const childNode = model.nodes.get(child)!;
    lines.push(`${prefix}${name} ${childNode.type} nlink=${childNode.nlink}`);
    if (childNode.type === 'DIRECTORY') lines.push(...modelListing(model, child, `${prefix}${name}/`));
  }
  return lines;
}

test('random namespace operations agree with a reference model', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(operation, { minLength: 20, maxLength: 80, size: 'max' }),
      async (operations) => {
        const h = await Harness.create();
        const model = new Model(hexOf(h.rootId), hexOf(h.lostFoundId));
        const files: string[] = [];
        for (const o of operations) {
          const dirs = model.dirs();
          const dir = dirs[o.dir % dirs.length]!;
          let expected: boolean;
          let actual: string;
          if (o.op === 'create') {
            const key = id();
            expected = model.create(dir, o.name, hexOf(key), o.directory ? 'DIRECTORY' : 'FILE');
            actual = (
              await h.run({
                create: {
                  parent: fromHex(dir),
                  name: o.name,
                  id: key,
                  type: o.directory ? 'DIRECTORY' : 'FILE',
                  mode: 0o755,
                  uid: 0,
                  gid: 0,
                },
              })
            ).code;
            if (expected && !o.directory) files.push(hexOf(key));
          } else if (o.op === 'remove') {
            expected = model.remove(dir, o.name, o.directory);
            actual = (await h.run({ unlink: { parent: fromHex(dir), name: o.name, directory: o.directory } }))
              .code;
          } else if (o.op === 'link') {
            if (files.length === 0) continue;
            const target = files[o.target % files.length]!;
            expected = model.link(dir, o.name, target);
            actual = (await h.run({ link: { id: fromHex(target), parent: fromHex(dir), name: o.name } }))
              .code;
          } else {
            const newDir = dirs[o.newDir % dirs.length]!;
            expected = model.rename(dir, o.name, newDir, o.newName);
            actual = (
              await h.run({
                rename: {
                  parent: fromHex(dir),
                  name: o.name,
                  newParent: fromHex(newDir),
                  newName: o.newName,
                },
              })
            ).code;
          }
          assert.equal(actual === 'OK', expected, `${JSON.stringify(o)} -> ${actual}`);
        }
        const root = await h.machine.inode(h.rootId);
        assert.equal(root?.nlink, model.nodes.get(hexOf(h.rootId))!.nlink, 'root link count');
        assert.deepEqual(await listing(h, h.rootId), modelListing(model, hexOf(h.rootId)));
      },
    ),
    { numRuns: 200 },
  );
});
