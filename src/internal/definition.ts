import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as Path from "@effect/platform/Path"
import type * as Effect from "effect/Effect"
import type * as Schema from "effect/Schema"
import type { StorageError } from "../StorageError.js"
import type { Service } from "./storage.js"

/**
 * What a storage's constructor may use: the file system, paths, and an HTTP
 * client (for remote storages).
 *
 * @internal
 */
export type Requirements = FileSystem.FileSystem | Path.Path | HttpClient.HttpClient

/** @internal */
export const TypeId: unique symbol = Symbol.for("mlup-storage/StorageDefinition")

/** @internal */
export interface StorageDefinition<Kwargs = any> {
  readonly [TypeId]: typeof TypeId
  readonly name: string
  readonly aliases: ReadonlyArray<string>
  readonly kwargs: Schema.Schema<Kwargs, any>
  readonly make: (kwargs: Kwargs) => Effect.Effect<Service, StorageError, Requirements>
}

/** @internal */
export const define = <Kwargs>(definition: {
  readonly name: string
  readonly aliases?: ReadonlyArray<string> | undefined
  readonly kwargs: Schema.Schema<Kwargs, any>
  readonly make: (kwargs: Kwargs) => Effect.Effect<Service, StorageError, Requirements>
}): StorageDefinition<Kwargs> => ({
  [TypeId]: TypeId,
  name: definition.name,
  aliases: definition.aliases ?? [],
  kwargs: definition.kwargs,
  make: definition.make
})

/** @internal */
export const isStorageDefinition = (u: unknown): u is StorageDefinition =>
  typeof u === "object" && u !== null && TypeId in u
