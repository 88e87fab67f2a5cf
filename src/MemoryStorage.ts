/**
 * The Memory storage (mlup's default `storage_type`): the model is already in
 * memory, and `load` hands it over as it is, as one `LoadedFile.Model`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as definition_ from "./internal/definition.js"
import * as internal from "./internal/storage.js"
import * as LoadedFile from "./LoadedFile.js"

/**
 * The names this storage answers to in `storage_type`.
 *
 * @since 0.1.0
 * @category constants
 */
export const storageType = "memory"

/**
 * mlup's full name for this storage, accepted in `storage_type`.
 *
 * @since 0.1.0
 * @category constants
 */
export const mlupStorageType = "mlup.ml.storage.memory.MemoryStorage"

/**
 * A Memory storage that hands over `model`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A>(model: A): Effect.Effect<internal.Service> => {
  const file = LoadedFile.model(model)
  return internal.make({
    storageType,
    load: Effect.succeed([file]),
    loadBytesSingleFile: () => Effect.succeed(file)
  })
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = <A>(model: A): Layer.Layer<internal.Storage> => Layer.effect(internal.Storage, make(model))

/**
 * `storage_kwargs` of the Memory storage: the model itself. From a config
 * file or the environment, where no model can be written, pass it with the
 * `model` option of `Selection.layerFromSelection` / `Selection.layerConfig`.
 *
 * @since 0.1.0
 * @category schemas
 */
const missingModel = "is missing: the memory storage hands over a model that is already in memory; pass it as `model`"

export const Kwargs = Schema.Struct({
  model: Schema.propertySignature(
    Schema.Unknown.pipe(Schema.filter((model) => model !== undefined, { message: () => missingModel }))
  ).annotations({ missingMessage: () => missingModel })
})

/**
 * @since 0.1.0
 * @category definitions
 */
export const definition: definition_.StorageDefinition<typeof Kwargs.Type> = definition_.define({
  name: storageType,
  aliases: [mlupStorageType, "MemoryStorage"],
  kwargs: Kwargs,
  make: (kwargs) => make(kwargs.model)
})
