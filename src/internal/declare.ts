/**
 * A storage declared once: its name, mlup's aliases, its kwargs schema and
 * its constructor from decoded kwargs. Everything else is derived from that:
 * the options in code (the kwargs in camelCase, durations as Effect
 * Durations, plus what only code can give: a retry Schedule, a client),
 * `make`, `layer`, `layerConfig`, the definition the selection uses, and the
 * Node twins (`NodeStorage`). A new option is one edit of the schema.
 *
 * @internal
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import type * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import type * as StorageError from "../StorageError.js"
import * as definition_ from "./definition.js"
import * as errors from "./errors.js"
import { Storage } from "./storage.js"
import type { Service } from "./storage.js"

/** What a storage's `make` and layers take from the application by default. @internal */
export type Platform = FileSystem.FileSystem | Path.Path

/** A storage's `make`: its options validated, or `InvalidStorageOptions`. @internal */
export type Make<O, R = Platform> = (options: O) => Effect.Effect<Service, StorageError.InvalidStorageOptions, R>

/** A storage's `layer`. @internal */
export type LayerOf<O, R = Platform> = (options: O) => Layer.Layer<Storage, StorageError.InvalidStorageOptions, R>

/** A storage's `layerConfig`: each option a `Config`. @internal */
export type LayerConfigOf<O, R = Platform> = (
  config: Config.Config.Wrap<O>
) => Layer.Layer<Storage, StorageError.InvalidStorageOptions | ConfigError.ConfigError, R>

/** What a storage's declaration gives: its constructors and its definition. @internal */
export interface Declared<O, A, R = Platform> {
  readonly make: Make<O, R>
  readonly layer: LayerOf<O, R>
  readonly layerConfig: LayerConfigOf<O, R>
  readonly definition: definition_.StorageDefinition<A>
}

/** `part_size_mb` → `partSizeMb`. @internal */
export type Camel<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Head}${Capitalize<Camel<Tail>>}` : S

/** The kwargs given in seconds, which code gives as Durations (`"30 seconds"`, `Duration.minutes(2)`). @internal */
export const durationKwargs = ["connect_timeout", "stall_timeout", "lock_timeout", "max_retry_after"] as const

/** @internal */
export type DurationKwarg = typeof durationKwargs[number]

type OptionalKeys<I> = { [K in keyof I]-?: {} extends Pick<I, K> ? K : never }[keyof I]
type InCode<K, V> = K extends DurationKwarg ? Duration.DurationInput : V

/**
 * A storage's options in code, from its kwargs as they are given (the
 * schema's encoded side): each key in camelCase, each duration a Duration.
 *
 * @internal
 */
export type OptionsOf<I> =
  & { readonly [K in Exclude<keyof I, OptionalKeys<I>> as Camel<K & string>]: InCode<K, I[K]> }
  & { readonly [K in OptionalKeys<I> as Camel<K & string>]?: InCode<K, Exclude<I[K], undefined>> | undefined }

/** `partSizeMb` → `part_size_mb`. */
const snake = (key: string) => key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)

/**
 * The kwargs of options in code: keys in snake_case, durations in seconds,
 * the code-only `extras` left out.
 *
 * @internal
 */
export const kwargsOf = (options: object, extras: ReadonlyArray<string>): Record<string, unknown> => {
  const kwargs: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (extras.includes(key)) continue
    const name = snake(key)
    kwargs[name] = value !== undefined && (durationKwargs as ReadonlyArray<string>).includes(name)
      ? Duration.toSeconds(Duration.decode(value as Duration.DurationInput))
      : value
  }
  return kwargs
}

/**
 * Declares a storage. `Extra` holds what only code can give (a Schedule, a
 * client), passed to `build` beside the decoded kwargs.
 *
 * @internal
 */
export const declare = <A, I, Extra extends object, R extends definition_.Requirements>(name: string, declaration: {
  readonly aliases: ReadonlyArray<string>
  readonly kwargs: Schema.Schema<A, I>
  readonly extras: ReadonlyArray<keyof Extra & string>
  readonly build: (kwargs: A, extra: Extra) => Effect.Effect<Service, StorageError.InvalidStorageOptions, R>
}) => {
  type Options = OptionsOf<I> & Extra
  const make: Make<Options, R> = (options) =>
    Effect.flatMap(
      errors.decodeOptionsInCode(name, declaration.kwargs, kwargsOf(options, declaration.extras)),
      (kwargs) => declaration.build(kwargs, options)
    )
  const layer: LayerOf<Options, R> = (options) => Layer.effect(Storage, make(options))
  const layerConfig: LayerConfigOf<Options, R> = (config) =>
    Layer.effect(Storage, Effect.flatMap(Config.unwrap(config), (options) => make(options as Options)))
  const definition: definition_.StorageDefinition<A> = definition_.define({
    name,
    aliases: declaration.aliases,
    kwargs: declaration.kwargs,
    // From a selection: no extras (the defaults).
    make: (kwargs) => declaration.build(kwargs, {} as Extra)
  })
  return { make, layer, layerConfig, definition }
}

/**
 * What every remote storage takes from code only.
 *
 * @internal
 */
export interface WithRetrySchedule {
  /**
   * Replaces the default retry policy (`retries`: exponential from 250 ms,
   * with jitter). Its input is the failure of each attempt.
   */
  readonly retrySchedule?: Schedule.Schedule<unknown, unknown> | undefined
}
