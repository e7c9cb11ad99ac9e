/** The human form of `zhsm status` (also the mount's /.zhsm/status). */
import type { StatusReport } from '../daemon/node.ts';

function bytes(value: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) => `  ${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`.trimEnd())
    .join('\n');
}

export function formatStatus(status: StatusReport): string {
  const lines: string[] = [];
  const primary =
    status.primary === null
      ? 'NO PRIMARY (no quorum reachable)'
      : `controller ${status.primary.id} (${status.primary.peerId})`;
  lines.push(
    `cell ${status.cell}: primary ${primary}, term ${status.term}, commit index ${status.commitIndex}`,
  );
  lines.push(
    `this node: ${status.node.name} ${status.node.peerId}${status.node.controllerId > 0 ? `, controller ${status.node.controllerId}` : ''}${status.node.storage ? ', storage server' : ''}`,
  );
  lines.push('');
  lines.push(
    `controllers (voters ${status.voters.join(',') || '-'}; learners ${status.learners.join(',') || '-'}):`,
  );
  lines.push(
    table([
      ['ID', 'ROLE', 'TERM', 'COMMIT', 'APPLIED', 'PEER'],
      ...status.controllers.map((c) => [
        String(c.id),
        c.role,
        String(c.term),
        String(c.commitIndex),
        String(c.appliedIndex),
        c.peerId,
      ]),
    ]),
  );
  lines.push('');
  lines.push('storage servers:');
  if (status.servers.length === 0) lines.push('  (none registered)');
  for (const server of status.servers) {
    lines.push(`  ${server.name} ${server.online ? 'online' : 'OFFLINE'} ${server.power} ${server.peerId}`);
    lines.push(
      table([
        ['  BACKEND', 'CAPACITY', 'FREE', 'PATH'],
        ...server.backends.map((b) => [`  ${b.uuid}`, bytes(b.capacityBytes), bytes(b.freeBytes), b.path]),
      ]),
    );
  }
  lines.push('');
  lines.push(`members: ${status.members}`);
  return lines.join('\n');
}
