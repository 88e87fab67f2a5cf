/**
 * The cache entry's lock across fibers and processes: created atomically,
 * kept alive by a heartbeat, taken over when stale.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import type * as Scope from "effect/Scope"
import * as crypto from "node:crypto"
import * as nodeFsSync from "node:fs"
import * as os from "node:os"
import * as StorageError from "../../StorageError.js"
import * as errors from "../errors.js"
import { call, readJson, removeAll } from "./durable.js"

interface LockContent {
  readonly pid: number
  readonly host: string
  readonly token: string
  readonly since: number
}

/**
 * How often the holder touches its lock (the heartbeat); after how long
 * without one a lock is stale whoever holds it; and, on the same host, after
 * how long a lock whose pid is gone is stale (a few missed beats: a pid is
 * only a hint, as containers reuse them and may share a host name).
 */
const heartbeat = Duration.seconds(1)
const staleAfter = Duration.seconds(30)
const staleAfterDeadPid = Duration.seconds(4)
const warnEvery = Duration.seconds(10)

let hostName: string | undefined
const hostname = (): string => (hostName ??= os.hostname())

const processIsAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === "EPERM"
  }
}

/**
 * An exclusive lock on a cache entry, across fibers and processes: a file
 * created with O_EXCL that names its holder (pid, host, a random token) and
 * whose mtime the holder touches every second (the heartbeat).
 *
 * A lock is stale, and taken over, when its heartbeat stopped for 30 s
 * (whatever it names: an empty or unreadable lock file, a pid reused by
 * another process, a holder on another host), or for 4 s when it names a pid
 * of this host that is gone. Waiting is logged at WARN with the holder and
 * how long, and bounded by `timeout` (`LockTimeout`). A lock file that could
 * be created but not written (a full disk) is still held, by its inode.
 * Released when the scope closes. Succeeds with whether it had to wait.
 *
 * @internal
 */
export const lock = (
  file: string,
  options: { readonly location: string; readonly timeout: Duration.Duration }
): Effect.Effect<
  { readonly waited: boolean },
  StorageError.WriteFailed | StorageError.LockTimeout,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const content: LockContent = {
      pid: process.pid,
      host: hostname(),
      token: crypto.randomUUID(),
      since: Date.now()
    }
    const text = JSON.stringify(content)
    const inodeOf = (target: string) =>
      Effect.sync(() => Option.fromNullable(nodeFsSync.statSync(target, { throwIfNoEntry: false })?.ino))

    // Ours when it holds our token, or (written empty on a full disk) our inode.
    const oursNow = (ino: Option.Option<number>): boolean => {
      let text: string
      try {
        text = nodeFsSync.readFileSync(file, "utf8")
      } catch {
        return false
      }
      try {
        return (JSON.parse(text) as LockContent).token === content.token
      } catch {
        const now = nodeFsSync.statSync(file, { throwIfNoEntry: false })?.ino
        return now !== undefined && Option.isSome(ino) && now === ino.value
      }
    }
    const isOurs = (ino: Option.Option<number>) => Effect.sync(() => oursNow(ino))

    // One atomic attempt: the finalizer is registered if, and as soon as, the file was created.
    const tryCreate = Effect.uninterruptible(Effect.gen(function*() {
      const created = yield* call(() => nodeFsSync.openSync(file, "wx")).pipe(
        Effect.map(Option.some),
        Effect.catchIf((error) => error.code === "EEXIST", () => Effect.succeed(Option.none())),
        Effect.mapError(errors.writeFailed(file, "create the lock"))
      )
      if (Option.isNone(created)) return Option.none<Option.Option<number>>()
      const fd = created.value
      // A full disk may refuse even these bytes: the empty file is still the lock, known by its inode.
      const written = yield* Effect.option(call(() => nodeFsSync.writeFileSync(fd, text)))
      const ino = Option.isSome(written)
        ? Option.none<number>()
        : Option.fromNullable(Option.getOrUndefined(yield* Effect.option(call(() => nodeFsSync.fstatSync(fd))))?.ino)
      yield* Effect.ignore(call(() => nodeFsSync.closeSync(fd)))
      return Option.some(ino)
    }).pipe(
      Effect.tap((created) =>
        Option.isSome(created)
          ? Effect.addFinalizer(() =>
            // Only our own lock is removed (a holder presumed dead may have been replaced).
            Effect.flatMap(isOurs(created.value), (ours) => (ours ? removeAll(file) : Effect.void))
          )
          : Effect.void
      )
    ))

    // Who holds the lock, and whether it is stale.
    const judge = Effect.gen(function*() {
      const info = nodeFsSync.statSync(file, { throwIfNoEntry: false })
      if (info === undefined) {
        return Option.none<{ holder: string; stale: boolean; beat: number; ino: Option.Option<number> }>()
      }
      const age = Date.now() - info.mtimeMs
      const held = yield* readJson<LockContent>(file)
      const holder = Option.match(held, {
        onNone: () => "an unknown holder (the lock file is empty or unreadable)",
        onSome: (held) => `pid ${held.pid} on ${held.host}`
      })
      const deadHere = Option.isSome(held) && held.value.host === content.host && !processIsAlive(held.value.pid)
      const stale = age > Duration.toMillis(staleAfter) ||
        (deadHere && age > Duration.toMillis(staleAfterDeadPid))
      return Option.some({
        holder: `${holder}, last heartbeat ${(age / 1000).toFixed(1)} s ago`,
        stale,
        beat: info.mtimeMs,
        ino: Option.some(info.ino)
      })
    })

    // Takes a dead holder's lock out of the way: moved aside atomically, then
    // checked to be the one judged stale (else put back: it is a new holder's).
    const takeOver = (holder: string, ino: Option.Option<number>) =>
      Effect.gen(function*() {
        const aside = `${file}.${crypto.randomUUID()}.stale`
        const moved = yield* Effect.option(call(() => nodeFsSync.renameSync(file, aside)))
        if (Option.isNone(moved)) return
        const taken = yield* inodeOf(aside)
        if (Option.isNone(ino) || Option.isNone(taken) || taken.value !== ino.value) {
          yield* Effect.ignore(call(() => nodeFsSync.linkSync(aside, file)))
          yield* removeAll(aside)
          return
        }
        yield* removeAll(aside)
        yield* Effect.logWarning(`Took over the lock of ${errors.cap(options.location)} from ${holder}: it is stale`)
      })

    // How long this process waits is the Clock's (a TestClock drives it); a lock's age is the file
    // system's (mtimes are wall-clock time, written by other processes too).
    const startedAt = yield* Clock.currentTimeMillis
    let lastWarning = 0
    let waited = false
    // The holder is alive only if its heartbeat was seen to beat during the wait (a lock just
    // made and then orphaned looks fresh for a while: a pid or a recent time proves nothing).
    let firstSeen: { readonly ino: Option.Option<number>; readonly beat: number } | undefined
    let beatSeen = false
    let created = yield* tryCreate
    while (Option.isNone(created)) {
      const state = yield* judge
      if (Option.isSome(state) && state.value.stale) {
        yield* takeOver(state.value.holder, state.value.ino)
      } else {
        if (Option.isSome(state)) {
          const { beat, ino } = state.value
          if (firstSeen === undefined || !Option.getEquivalence((a: number, b: number) => a === b)(firstSeen.ino, ino)) {
            firstSeen = { ino, beat }
            beatSeen = false
          } else if (beat > firstSeen.beat) {
            beatSeen = true
          }
        }
        const holder = Option.match(state, { onNone: () => "a holder that just left", onSome: (s) => s.holder })
        const now = yield* Clock.currentTimeMillis
        const waitedFor = now - startedAt
        if (waitedFor >= Duration.toMillis(options.timeout)) {
          return yield* new StorageError.LockTimeout({
            location: options.location,
            lockFile: file,
            holder,
            seconds: Math.round(waitedFor / 1000),
            alive: beatSeen,
            staleAfterSeconds: Duration.toSeconds(staleAfter)
          })
        }
        if (!waited || now - lastWarning >= Duration.toMillis(warnEvery)) {
          yield* Effect.logWarning(
            `Waiting for the lock of ${errors.cap(options.location)} (${errors.cap(file)}), held by ${holder}, for ${
              (waitedFor / 1000).toFixed(0)
            } s (giving up after ${Duration.format(options.timeout)})`
          )
          lastWarning = now
        }
        waited = true
        yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(40, 100)))
      }
      created = yield* tryCreate
    }
    const ino = created.value
    // The heartbeat tells every other process that the holder is alive; it stops touching a lock that is not ours.
    // (The file was just created: its first beat comes within a second, with the others'.)
    const beat: Held = {
      beat: () => {
        if (!oursNow(ino)) return false
        try {
          const now = new Date()
          nodeFsSync.utimesSync(file, now, now)
        } catch {
          // Touched at the next beat.
        }
        return true
      },
      lost: Effect.logWarning(`The lock of ${errors.cap(options.location)} was taken over while this process held it`)
    }
    yield* Effect.acquireRelease(hold(beat), () => letGo(beat))
    return { waited }
  })

/**
 * A lock this process holds: its beat touches it, synchronously (a few
 * microseconds; never after the lock was let go, whose file another process
 * may hold by then); false: it is not ours any more (`lost` says so), and
 * it is not touched again.
 */
interface Held {
  readonly beat: () => boolean
  readonly lost: Effect.Effect<void>
}

// The locks this process holds, and the one fiber that beats for them all every second (a fiber
// per lock cost some 0.5 ms per small file of a large folder). The fiber runs while a lock is
// held, on the Clock of the fiber that took the first of them (a TestClock's, in tests).
const held = new Set<Held>()
let beating: Fiber.RuntimeFiber<void> | "starting" | undefined

const beats: Effect.Effect<void> = Effect.forever(
  Effect.zipRight(
    Effect.sleep(heartbeat),
    Effect.suspend(() => {
      const lost: Array<Effect.Effect<void>> = []
      for (const lock of held) {
        if (!lock.beat()) {
          held.delete(lock)
          lost.push(lock.lost)
        }
      }
      return Effect.all(lost, { discard: true })
    })
  )
)

const stopBeating = (): Effect.Effect<void> => {
  if (beating === undefined || beating === "starting") return Effect.void
  const fiber = beating
  beating = undefined
  return Fiber.interruptFork(fiber)
}

const hold = (lock: Held): Effect.Effect<void> =>
  Effect.suspend(() => {
    held.add(lock)
    if (beating !== undefined) return Effect.void
    beating = "starting"
    return Effect.flatMap(Effect.forkDaemon(Effect.interruptible(beats)), (fiber) => {
      beating = fiber
      // Every lock was let go while the fiber started.
      return held.size === 0 ? stopBeating() : Effect.void
    })
  })

const letGo = (lock: Held): Effect.Effect<void> =>
  Effect.suspend(() => {
    held.delete(lock)
    return held.size === 0 ? stopBeating() : Effect.void
  })
