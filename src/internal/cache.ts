/**
 * The cache, by job: its folder (`cache/folder.ts`), durable writes
 * (`cache/durable.ts`), digests of cached files (`cache/digests.ts`) and the
 * entry's lock (`cache/lock.ts`), imported together as `cache`.
 *
 * @internal
 */
export * from "./cache/digests.js"
export * from "./cache/durable.js"
export * from "./cache/folder.js"
export * from "./cache/lock.js"
