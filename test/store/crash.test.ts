import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Backend } from '../../node/store/backend.ts';
import { newObjectId, objectIdToHex } from '../../node/store/object-id.ts';
import { patternBytes, tempDirectory } from '../helpers.ts';

const crashes = Number(process.env.ZHSM_CRASHES ?? 60);
const childScript = join(import.meta.dirname, 'crash-child.ts');

function bodyOf(version: number): Buffer {
  // Must match crash-child.ts.
  const size = (version * 7919) % (3 * 1024 * 1024);
  const body = Buffer.alloc(size);
  if (size > 0) patternBytes(Math.min(size, 100_000), version).copy(body, 0);
  if (size > 2 * 1024 * 1024) patternBytes(50_000, version + 1).copy(body, 2 * 1024 * 1024);
  return body;
}

/** Run the child until it is SIGKILLed after `delayMs`; returns the acknowledged versions. */
function runAndKill(root: string, ids: string, start: number, delayMs: number): Promise<Map<number, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [childScript, root, ids, String(start)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const acked = new Map<number, number>();
    let stderr = '';
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (data: string) => {
      buffered += data;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready') setTimeout(() => child.kill('SIGKILL'), delayMs);
        const match = /^ack (\d+) (\d+)$/.exec(line);
        if (match) acked.set(Number(match[1]), Number(match[2]));
      }
    });
    child.stderr.on('data', (data) => {
      stderr += data;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`child exited with ${code}: ${stderr}`));
    });
  });
}

test(`ingest and header updates survive ${crashes} SIGKILLs at random moments`, {
  timeout: 600_000,
}, async (t) => {
  const root = tempDirectory(t);
  await Backend.create(root, { cell: 'crash' });
  const ids = [newObjectId(), newObjectId(), newObjectId()];
  const idList = ids.map(objectIdToHex).join(',');
  const lastAcked = new Map<number, number>();
  let version = 1;
  let sawTempLeftovers = 0;
  let random = 12345;
  const nextRandom = () => {
    random = (random * 1103515245 + 12345) % 2 ** 31;
    return random / 2 ** 31;
  };
  for (let crash = 0; crash < crashes; crash++) {
    const acked = await runAndKill(root, idList, version, Math.floor(nextRandom() * 250));
    for (const [i, v] of acked) lastAcked.set(i, v);
    if (readdirSync(join(root, 'tmp')).length > 0) sawTempLeftovers++;
    const backend = await Backend.open(root, { cell: 'crash' });
    assert.deepEqual(readdirSync(join(root, 'tmp')), [], 'temp leftovers are cleaned on open');
    for (const [i, id] of ids.entries()) {
      if (!(await backend.has(id))) {
        assert.equal(lastAcked.get(i), undefined, `object ${i} was acknowledged but is missing`);
        continue;
      }
      const head = await backend.head(id);
      const acknowledged = lastAcked.get(i) ?? 0;
      assert.ok(
        head.version >= acknowledged,
        `object ${i}: version ${head.version} older than acknowledged ${acknowledged}`,
      );
      assert.ok(head.version < version + 1000, 'version from the future');
      const body = await backend.readAll(id, 'full');
      assert.ok(
        body.equals(bodyOf(head.version + i)),
        `object ${i} version ${head.version}: body does not match`,
      );
      assert.equal(
        Math.round(statSync(backend.objectPath(id)).mtimeMs),
        1_600_000_000_000 + head.version,
        'mtime is the original one',
      );
    }
    const report = await backend.scrub();
    assert.deepEqual([...report.corrupt, ...report.stray], [], 'scrub finds nothing wrong');
    version = Math.max(version, ...[...lastAcked.values()].map((v) => v + 1)) + 1;
  }
  t.diagnostic(`${crashes} crashes; ${sawTempLeftovers} left temp files behind (cleaned on open)`);
});
