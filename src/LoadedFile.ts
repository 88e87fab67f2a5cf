/**
 * What a storage hands to the code that deserializes a model (mlup's
 * "binarizer").
 *
 * A `LoadedFile` is one of three things, told apart by `_tag`:
 *
 * - `Model`: the model is already in memory (the Memory storage). mlup:
 *   `LoadedFile(raw_data=model)`.
 * - `Path`: a file on the local disk, handed over by path only; the
 *   deserializer reads it itself. mlup: `LoadedFile(path=path)`.
 * - `Bytes`: a file whose bytes were read into memory. mlup:
 *   `LoadedFile(raw_data=bytes, path=path)`.
 *
 * The bytes of a `Bytes` file belong to the scope of the `load` that produced
 * them. When that scope closes they are released: `bytes` throws
 * `BytesReleasedError`, and the ArrayBuffer behind them is detached, so a view
 * kept by mistake is empty and cannot hold the memory. To keep bytes beyond the
 * scope, copy them (`bytes.slice()`) inside it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Equal from "effect/Equal"
import { dual } from "effect/Function"
import * as Hash from "effect/Hash"
import * as Inspectable from "effect/Inspectable"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as release from "./internal/release.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("mlup-storage/LoadedFile")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A model that is already in memory.
 *
 * @since 0.1.0
 * @category models
 */
export interface Model<A = unknown> {
  readonly [TypeId]: TypeId
  readonly _tag: "Model"
  readonly model: A
}

/**
 * A file on the local disk, handed over by its path.
 *
 * @since 0.1.0
 * @category models
 */
export interface Path {
  readonly [TypeId]: TypeId
  readonly _tag: "Path"
  /** Absolute path of the file (a symbolic link is not resolved). */
  readonly path: string
  /** The file's name (last segment of `path`). */
  readonly name: string
  /** Size in bytes. */
  readonly size: number
}

/**
 * A file whose bytes were read into memory. `bytes` is valid until the scope
 * of the `load` that produced it closes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Bytes {
  readonly [TypeId]: TypeId
  readonly _tag: "Bytes"
  /** Where the bytes came from: an absolute path for local files. */
  readonly path: string
  readonly name: string
  readonly size: number
  /**
   * The file's bytes. Throws `BytesReleasedError` once the scope of the `load`
   * that produced them has closed.
   */
  readonly bytes: Uint8Array
  /** Whether the bytes were released. */
  readonly released: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export type LoadedFile = Model | Path | Bytes

/**
 * Thrown by `Bytes.bytes` (and returned by `getBytes`) after the bytes were
 * released: the scope of the `load` that produced them has closed.
 *
 * @since 0.1.0
 * @category errors
 */
export class BytesReleasedError extends Schema.TaggedError<BytesReleasedError>("mlup-storage/BytesReleasedError")(
  "BytesReleasedError",
  { path: Schema.String }
) {
  /**
   * @since 0.1.0
   */
  override get message(): string {
    return `The bytes of ${this.path} were released when the scope of their load closed: ` +
      `use them inside that scope, or copy them there (bytes.slice())`
  }
}

/** A size as people read it: 1.2 MB, 340 kB, 12 B (decimal units). */
const formatSize = (size: number): string => {
  const units = ["B", "kB", "MB", "GB", "TB"]
  let value = size
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return unit === 0 ? `${size} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

/** How a file prints: `Path(model.onnx, 1.2 MB, /models/model.onnx)`, `Bytes(model.onnx, 1.2 MB)`, `Model(…)`. */
const show = (file: LoadedFile): string => {
  switch (file._tag) {
    case "Model":
      return `Model(${Inspectable.format(file.model).replace(/\s+/g, " ").slice(0, 80)})`
    case "Path":
      return `Path(${file.name}, ${formatSize(file.size)}, ${file.path})`
    case "Bytes":
      return `Bytes(${file.name}, ${formatSize(file.size)}${file.released ? ", released" : ""})`
  }
}

// Files compare (Equal, Hash) as Effect's data types do: a model by its value, a path by path, name
// and size (the file on disk it names). Bytes by identity: two loads of the same path may hand over
// different contents, and comparing contents would read megabytes (or bytes already released).
const Proto = {
  [TypeId]: TypeId,
  [Equal.symbol](this: LoadedFile, that: unknown): boolean {
    if (!isLoadedFile(that) || that._tag !== this._tag) return false
    if (this._tag === "Model") return Equal.equals(this.model, (that as Model).model)
    if (this._tag === "Bytes") return this === that
    const other = that as Path
    return this.path === other.path && this.name === other.name && this.size === other.size
  },
  [Hash.symbol](this: LoadedFile): number {
    return this._tag === "Model"
      ? Hash.combine(Hash.string("Model"))(Hash.hash(this.model))
      : this._tag === "Bytes"
      ? Hash.random(this)
      : Hash.cached(this, Hash.array([this._tag, this.path, this.name, this.size].map((part) => Hash.hash(part))))
  },
  toString(this: LoadedFile): string {
    return show(this)
  },
  toJSON(this: LoadedFile) {
    return this._tag === "Model"
      ? { _tag: this._tag, model: Inspectable.toJSON(this.model) }
      : this._tag === "Path"
      ? { _tag: this._tag, path: this.path, name: this.name, size: this.size }
      : { _tag: this._tag, path: this.path, name: this.name, size: this.size, released: this.released }
  },
  [Inspectable.NodeInspectSymbol](this: LoadedFile): string {
    return show(this)
  }
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const model = <A>(model: A): Model<A> => Object.assign(Object.create(Proto), { _tag: "Model" as const, model })

/**
 * @since 0.1.0
 * @category constructors
 */
export const path = (options: { readonly path: string; readonly name: string; readonly size: number }): Path =>
  Object.assign(Object.create(Proto), {
    _tag: "Path" as const,
    path: options.path,
    name: options.name,
    size: options.size
  })

class BytesImpl implements Bytes {
  readonly [TypeId]: TypeId = TypeId
  readonly [Equal.symbol] = Proto[Equal.symbol]
  readonly [Hash.symbol] = Proto[Hash.symbol]
  readonly [Inspectable.NodeInspectSymbol] = Proto[Inspectable.NodeInspectSymbol]
  readonly _tag = "Bytes" as const
  readonly size: number
  #bytes: Uint8Array | undefined
  constructor(readonly path: string, readonly name: string, bytes: Uint8Array) {
    this.size = bytes.byteLength
    this.#bytes = bytes
  }
  get bytes(): Uint8Array {
    if (this.#bytes === undefined) {
      throw new BytesReleasedError({ path: this.path })
    }
    return this.#bytes
  }
  get released(): boolean {
    return this.#bytes === undefined
  }
  release(): void {
    const bytes = this.#bytes
    this.#bytes = undefined
    if (bytes !== undefined) release.detach(bytes)
  }
  toJSON() {
    return { _tag: this._tag, path: this.path, name: this.name, size: this.size, released: this.released }
  }
  toString(): string {
    return show(this)
  }
}

/**
 * A `Bytes` file owned by the current scope: when the scope closes, the file
 * stops giving access to `bytes` and, when `bytes` is the only view of its
 * whole ArrayBuffer, that ArrayBuffer is detached. A Buffer that shares a
 * pooled slab with others is only dropped, never detached.
 *
 * Custom storages build their `Bytes` files with this, inside `load`, so that
 * they get the release guarantee for free.
 *
 * @since 0.1.0
 * @category constructors
 */
export const bytes = (options: {
  readonly path: string
  readonly name: string
  readonly bytes: Uint8Array
}): Effect.Effect<Bytes, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.zipRight(release.track, Effect.sync(() => new BytesImpl(options.path, options.name, options.bytes))),
    (file) => Effect.sync(() => file.release())
  )

/**
 * @since 0.1.0
 * @category refinements
 */
export const isLoadedFile = (u: unknown): u is LoadedFile => Predicate.hasProperty(u, TypeId)

/**
 * @since 0.1.0
 * @category refinements
 */
export const isModel = (file: LoadedFile): file is Model => file._tag === "Model"

/**
 * @since 0.1.0
 * @category refinements
 */
export const isPath = (file: LoadedFile): file is Path => file._tag === "Path"

/**
 * @since 0.1.0
 * @category refinements
 */
export const isBytes = (file: LoadedFile): file is Bytes => file._tag === "Bytes"

/**
 * The bytes of a `Bytes` file, or `BytesReleasedError` when they were released.
 *
 * @since 0.1.0
 * @category getters
 */
export const getBytes = (file: Bytes): Effect.Effect<Uint8Array, BytesReleasedError> =>
  file.released ? Effect.fail(new BytesReleasedError({ path: file.path })) : Effect.sync(() => file.bytes)

/**
 * Branches on the kind of file, with full types:
 *
 * ```ts
 * LoadedFile.match(file, {
 *   Model: ({ model }) => model as MyModel,
 *   Path: ({ path }) => deserializeFromPath(path),
 *   Bytes: ({ bytes }) => deserialize(bytes)
 * })
 * ```
 *
 * @since 0.1.0
 * @category pattern matching
 */
export const match: {
  <A, B, C>(cases: {
    readonly Model: (file: Model) => A
    readonly Path: (file: Path) => B
    readonly Bytes: (file: Bytes) => C
  }): (file: LoadedFile) => A | B | C
  <A, B, C>(file: LoadedFile, cases: {
    readonly Model: (file: Model) => A
    readonly Path: (file: Path) => B
    readonly Bytes: (file: Bytes) => C
  }): A | B | C
} = dual(2, (file: LoadedFile, cases: Record<LoadedFile["_tag"], (file: any) => unknown>) => cases[file._tag](file))
