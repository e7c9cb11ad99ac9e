/**
 * The one way zhsm loads its protobuf schemas: every `proto/*.proto` file is parsed at startup
 * with protobufjs (reflection; static code generation is no faster here, see stack notes).
 *
 * 64-bit integers decode to JavaScript numbers (exact up to 2^53: ms timestamps, sizes up to
 * 8 PiB), enums to their string names, bytes to Uint8Array. Decoding never throws a raw
 * protobufjs error: it throws a typed `DecodeError` naming the message type.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { DecodeError, InvalidArgumentError } from '../node/common/errors.ts';

// Decode 64-bit fields to numbers instead of Long objects.
// biome-ignore lint/suspicious/noExplicitAny: protobufjs documents this switch as `util.Long = undefined`.
(protobuf.util as any).Long = undefined;
protobuf.configure();

const protoDirectory = dirname(fileURLToPath(import.meta.url));

/**
 * The schemas: from `protos.json` when it sits next to this code (the bundle in dist/ carries one,
 * made from these same .proto files by scripts/bundle.mjs: about half the start-up cost of parsing
 * the text), else parsed from the .proto files.
 */
function loadRoot(): protobuf.Root {
  const parsed = join(protoDirectory, 'protos.json');
  if (existsSync(parsed)) {
    const root = protobuf.Root.fromJSON(JSON.parse(readFileSync(parsed, 'utf8')) as protobuf.INamespace);
    root.resolveAll();
    return root;
  }
  return parseProtoFiles(protoDirectory);
}

/** Every .proto file of `directory`, parsed (also what scripts/bundle.mjs saves as protos.json). */
export function parseProtoFiles(directory: string): protobuf.Root {
  const root = new protobuf.Root();
  const files = readdirSync(directory)
    .filter((name) => name.endsWith('.proto'))
    .sort()
    .map((name) => join(directory, name));
  root.loadSync(files, { keepCase: false });
  root.resolveAll();
  return root;
}

const root = loadRoot();

const conversion: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  bytes: Uint8Array as unknown as StringConstructor,
  defaults: true,
  arrays: true,
  objects: true,
};

export interface Codec<T> {
  readonly typeName: string;
  encode(message: T): Uint8Array;
  /** Throws DecodeError on malformed input. */
  decode(bytes: Uint8Array): T;
}

/** A codec for a fully qualified message type, e.g. 'zhsm.object.ObjectHeader'. */
export function codec<T>(typeName: string): Codec<T> {
  const type = root.lookupType(typeName);
  return {
    typeName,
    encode(message: T): Uint8Array {
      const problem = type.verify(message as Record<string, unknown>);
      if (problem !== null && !(typeof problem === 'string' && problem.includes('enum value expected'))) {
        throw new InvalidArgumentError(`cannot encode ${typeName}: ${problem}`, { typeName });
      }
      return type.encode(type.fromObject(message as Record<string, unknown>)).finish();
    },
    decode(bytes: Uint8Array): T {
      try {
        return type.toObject(type.decode(bytes), conversion) as T;
      } catch (error) {
        throw new DecodeError(
          `malformed ${typeName}: ${(error as Error).message}`,
          { typeName },
          { cause: error },
        );
      }
    },
  };
}
