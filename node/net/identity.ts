/**
 * The node's persistent identity: an Ed25519 key in `<dataDirectory>/identity.key`.
 *
 * The file is an `IdentityFile` record (proto/net.proto): a magic string, a format version, the
 * libp2p protobuf-encoded private key and its SHA-256, so that a damaged file is detected and
 * reported instead of silently giving the node a different peer id. The file is created with
 * mode 0600, written to a temporary file, fsynced, linked into place (link, not rename: two
 * processes creating the identity at once cannot overwrite each other; the loser loads the
 * winner's key) and the directory is fsynced. A key file readable by group or others is refused,
 * as ssh refuses such keys.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { codec } from '../../proto/index.ts';
import {
  CorruptObjectError,
  IoError,
  isSystemError,
  NotFoundError,
  PermissionDeniedError,
  UnsupportedFormatError,
  ZhsmError,
} from '../common/errors.ts';

export const identityFileName = 'identity.key';
const identityMagic = 'zhsm-identity';
const identityFormatVersion = 1;
/** A valid identity file is about 120 bytes; anything far larger is not one. */
const identityFileBytesMax = 4096;
const identityFileMode = 0o600;

interface IdentityFileRecord {
  magic: string;
  formatVersion: number;
  privateKey: Uint8Array;
  privateKeySha256: Uint8Array;
}

const identityCodec = codec<IdentityFileRecord>('zhsm.net.IdentityFile');

export interface Identity {
  readonly privateKey: PrivateKey;
  /** The peer id derived from the key (base58 string form). */
  readonly peerId: string;
  /** True when this call created the key. */
  readonly created: boolean;
  readonly path: string;
}

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

/** Encode a private key as the bytes of an identity file. */
export function encodeIdentityFile(privateKey: PrivateKey): Uint8Array {
  const keyBytes = privateKeyToProtobuf(privateKey);
  return identityCodec.encode({
    magic: identityMagic,
    formatVersion: identityFormatVersion,
    privateKey: keyBytes,
    privateKeySha256: sha256(keyBytes),
  });
}

/** Decode the bytes of an identity file; throws CorruptObjectError or UnsupportedFormatError. */
export function decodeIdentityFile(bytes: Uint8Array, path: string): PrivateKey {
  if (bytes.byteLength === 0) throw new CorruptObjectError(`identity key file ${path} is empty`, { path });
  if (bytes.byteLength > identityFileBytesMax) {
    throw new CorruptObjectError(`identity key file ${path} is too large (${bytes.byteLength} bytes)`, {
      path,
    });
  }
  let record: IdentityFileRecord;
  try {
    record = identityCodec.decode(bytes);
  } catch (error) {
    throw new CorruptObjectError(
      `identity key file ${path} is damaged (not a valid record)`,
      { path },
      { cause: error },
    );
  }
  if (record.magic !== identityMagic) {
    throw new CorruptObjectError(`identity key file ${path} is damaged or not a zhsm identity (bad magic)`, {
      path,
    });
  }
  if (record.formatVersion !== identityFormatVersion) {
    throw new UnsupportedFormatError(
      `identity key file ${path} has format version ${record.formatVersion}, this zhsm reads ${identityFormatVersion}`,
      { path, formatVersion: record.formatVersion },
    );
  }
  if (!Buffer.from(sha256(record.privateKey)).equals(Buffer.from(record.privateKeySha256))) {
    throw new CorruptObjectError(`identity key file ${path} is damaged (checksum mismatch)`, { path });
  }
  let privateKey: PrivateKey;
  try {
    privateKey = privateKeyFromProtobuf(record.privateKey);
  } catch (error) {
    throw new CorruptObjectError(
      `identity key file ${path} holds an invalid key`,
      { path },
      { cause: error },
    );
  }
  if (privateKey.type !== 'Ed25519') {
    throw new UnsupportedFormatError(
      `identity key file ${path} holds a ${privateKey.type} key, expected Ed25519`,
      {
        path,
      },
    );
  }
  return privateKey;
}

async function readIdentity(path: string): Promise<PrivateKey | undefined> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, 'r');
  } catch (error) {
    if (isSystemError(error, 'ENOENT')) return undefined;
    if (isSystemError(error, 'EACCES')) {
      throw new PermissionDeniedError(`cannot read identity key file ${path}`, { path }, { cause: error });
    }
    throw new IoError(
      `cannot open identity key file ${path}: ${(error as Error).message}`,
      { path },
      { cause: error },
    );
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile())
      throw new CorruptObjectError(`identity key path ${path} is not a regular file`, { path });
    if ((stats.mode & 0o077) !== 0) {
      throw new PermissionDeniedError(
        `identity key file ${path} is accessible by group or others (mode ${(stats.mode & 0o777).toString(8)}); ` +
          `run: chmod 600 ${path}`,
        { path, mode: stats.mode & 0o777 },
      );
    }
    if (stats.size > identityFileBytesMax) {
      throw new CorruptObjectError(`identity key file ${path} is too large (${stats.size} bytes)`, { path });
    }
    const bytes = await handle.readFile();
    return decodeIdentityFile(bytes, path);
  } finally {
    await handle.close();
  }
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await fsp.open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Write the identity without ever replacing an existing one; false if one already exists. */
async function writeIdentityExclusive(directory: string, path: string, bytes: Uint8Array): Promise<boolean> {
  const temporaryPath = join(
    directory,
    `.${identityFileName}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`,
  );
  const handle = await fsp.open(temporaryPath, 'wx', identityFileMode);
  try {
    try {
      await handle.chmod(identityFileMode); // the umask may have narrowed it; never widened
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await fsp.link(temporaryPath, path);
    } catch (error) {
      if (isSystemError(error, 'EEXIST')) return false;
      throw error;
    }
    return true;
  } finally {
    await fsp.rm(temporaryPath, { force: true });
    await syncDirectory(directory);
  }
}

/** Load the identity of `dataDirectory`; NotFoundError when it has none (never creates one). */
export async function loadIdentity(dataDirectory: string): Promise<Identity> {
  const path = join(dataDirectory, identityFileName);
  const existing = await readIdentity(path);
  if (existing === undefined)
    throw new NotFoundError(`no identity key in ${dataDirectory} (not a node's data directory?)`, { path });
  return { privateKey: existing, peerId: peerIdFromPrivateKey(existing).toString(), created: false, path };
}

/**
 * Load the node's identity from `dataDirectory`, creating a new Ed25519 key when there is none.
 * Throws CorruptObjectError for a damaged file, UnsupportedFormatError for a newer format,
 * PermissionDeniedError for a file others can read, IoError for other file system failures.
 */
export async function loadOrCreateIdentity(dataDirectory: string): Promise<Identity> {
  const path = join(dataDirectory, identityFileName);
  try {
    const existing = await readIdentity(path);
    if (existing !== undefined) {
      return {
        privateKey: existing,
        peerId: peerIdFromPrivateKey(existing).toString(),
        created: false,
        path,
      };
    }
    await fsp.mkdir(dataDirectory, { recursive: true, mode: 0o700 });
    const privateKey = await generateKeyPair('Ed25519');
    if (await writeIdentityExclusive(dataDirectory, path, encodeIdentityFile(privateKey))) {
      return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created: true, path };
    }
    // Another process created the identity between our read and our link: use theirs.
    const theirs = await readIdentity(path);
    if (theirs === undefined)
      throw new IoError(`identity key file ${path} vanished while being created`, { path });
    return { privateKey: theirs, peerId: peerIdFromPrivateKey(theirs).toString(), created: false, path };
  } catch (error) {
    if (error instanceof ZhsmError) throw error;
    throw new IoError(
      `cannot load or create identity in ${dataDirectory}: ${(error as Error).message}`,
      { path },
      {
        cause: error,
      },
    );
  }
}
