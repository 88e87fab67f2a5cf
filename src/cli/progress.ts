import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Progress from "../Progress.js"

const MiB = 1024 * 1024

/** @internal */
export const formatBytes = (bytes: number): string => {
  if (bytes < 1024) return `${bytes} B`
  const units = ["KiB", "MiB", "GiB", "TiB"]
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`
}

const formatSeconds = (seconds: number): string => {
  if (!Number.isFinite(seconds)) return "?"
  const s = Math.ceil(seconds)
  const two = (n: number) => String(n).padStart(2, "0")
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`
  return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`
}

interface FileState {
  readonly name: string
  done: number
  total: number | undefined
  phase: Progress.Event["phase"]
  readonly startedAt: number
  readonly startedWith: number
  announced: boolean
}

/** What the renderer needs of the terminal. @internal */
export interface Output {
  readonly isTTY: boolean
  readonly columns: number
  readonly write: (text: string) => void
}

const BAR = 24
const NAME = 24
const MAX_LIVE = 8

const bar = (done: number, total: number | undefined, width: number): string => {
  if (total === undefined || total === 0) return `[${"·".repeat(width)}]`
  const filled = Math.min(width, Math.floor((done / total) * width))
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`
}

const percent = (done: number, total: number | undefined) =>
  total === undefined || total === 0 ? "   ?" : `${Math.min(100, Math.floor((done / total) * 100))}%`.padStart(4)

/**
 * Renders progress events: on a terminal, a bar per file being fetched and
 * one for the whole load (with speed and time left), redrawn at most ten
 * times a second, with a line above them for each file finished; elsewhere,
 * plain lines: a file started, finished, and the whole load every 5 seconds.
 * Runs until the scope closes; `finish` draws the last state.
 *
 * @internal
 */
export const render = (
  events: Stream.Stream<Progress.Event>,
  output: Output
): Effect.Effect<{ readonly finish: Effect.Effect<void> }, never, Scope.Scope> =>
  Effect.gen(function*() {
    const files = new Map<string, FileState>()
    const startedAt = Date.now()
    let overallDone = 0
    let overallTotal = 0
    let overallStartedWith: number | undefined
    let drawn = 0
    let dirty = false
    let lastPlain = Date.now()

    // Read at every draw: a resized terminal gets lines of its new width.
    const width = () => Math.max(40, output.columns)
    const fit = (line: string) => (line.length > width() - 1 ? line.slice(0, width() - 1) : line)
    const speedOf = (done: number, startedWith: number, since: number) => {
      const seconds = (Date.now() - since) / 1000
      return seconds > 0.2 ? (done - startedWith) / seconds : 0
    }
    const rate = (bytesPerSecond: number) => `${(bytesPerSecond / MiB).toFixed(1)} MiB/s`
    const eta = (done: number, total: number | undefined, speed: number) =>
      total === undefined || speed <= 0 || done >= total ? "" : `${formatSeconds((total - done) / speed)} left`
    const name = (text: string, size: number) => (text.length > size ? `…${text.slice(text.length - size + 1)}` : text.padEnd(size))

    const clear = () => {
      if (drawn > 0) output.write(`\x1b[${drawn}F\x1b[0J`)
      drawn = 0
    }
    const draw = () => {
      const live = [...files.values()].filter((file) => file.phase === "fetching").slice(0, MAX_LIVE)
      // The figures (percent, bytes, speed, time left) always fit; the name and
      // the bar share what is left of the line, the bar going first when short.
      const line = (label: string, done: number, total: number | undefined, speed: number) => {
        const figures = `${percent(done, total)} ${formatBytes(done)}/${total === undefined ? "?" : formatBytes(total)} ` +
          `${rate(speed)} ${eta(done, total, speed)}`.trimEnd()
        const room = width() - 1 - figures.length - 1
        const nameWidth = Math.max(8, Math.min(NAME, room - (BAR + 3)))
        const barWidth = Math.min(BAR, room - nameWidth - 3)
        return barWidth >= 6
          ? `${name(label, nameWidth)} ${bar(done, total, barWidth)} ${figures}`
          : `${name(label, Math.max(8, Math.min(NAME, room - 1)))} ${figures}`
      }
      const lines = live.map((file) =>
        line(file.name, file.done, file.total, speedOf(file.done, file.startedWith, file.startedAt))
      )
      const finished = [...files.values()].filter((file) => file.phase !== "fetching").length
      lines.push(
        line(
          `total (${finished}/${files.size} files)`,
          overallDone,
          overallTotal,
          speedOf(overallDone, overallStartedWith ?? 0, startedAt)
        )
      )
      clear()
      output.write(lines.map((line) => `${fit(line)}\n`).join(""))
      drawn = lines.length
      dirty = false
    }
    const permanent = (line: string) => {
      if (output.isTTY) clear()
      output.write(`${line}\n`)
      if (output.isTTY) draw()
    }

    const onEvent = (event: Progress.Event) => {
      overallDone = event.overallDone
      overallTotal = event.overallTotal
      overallStartedWith ??= event.overallDone
      let file = files.get(event.location)
      if (file === undefined) {
        file = {
          name: event.name,
          done: event.done,
          total: event.total,
          phase: event.phase,
          startedAt: Date.now(),
          startedWith: event.done,
          announced: false
        }
        files.set(event.location, file)
      }
      const before = file.phase
      file.done = event.done
      file.total = event.total
      file.phase = event.phase
      if (event.phase === "fetching" && !file.announced) {
        file.announced = true
        if (!output.isTTY) {
          const resumed = event.done > 0 ? ` (resuming at ${formatBytes(event.done)})` : ""
          permanent(`fetching ${event.name}${event.total === undefined ? "" : ` (${formatBytes(event.total)})`}${resumed}`)
        }
      }
      if (event.phase !== before || (event.phase !== "fetching" && !file.announced)) {
        if (event.phase === "cached") {
          file.announced = true
          permanent(`cached   ${event.name} (${formatBytes(event.done)}): the cached copy is current`)
        } else if (event.phase === "done") {
          const seconds = Math.max(0.001, (Date.now() - file.startedAt) / 1000)
          permanent(
            `fetched  ${event.name} (${formatBytes(event.done)}) in ${seconds.toFixed(1)} s, ` +
              rate((event.done - file.startedWith) / seconds)
          )
        }
      }
      if (!output.isTTY && Date.now() - lastPlain >= 5000) {
        lastPlain = Date.now()
        const speed = speedOf(overallDone, overallStartedWith ?? 0, startedAt)
        permanent(
          `progress ${percent(overallDone, overallTotal).trim()} ${formatBytes(overallDone)}/${formatBytes(overallTotal)} ` +
            `${rate(speed)} ${eta(overallDone, overallTotal, speed)}`.trimEnd()
        )
      }
      dirty = true
    }

    const consumer = yield* Effect.forkScoped(Stream.runForEach(events, (event) => Effect.sync(() => onEvent(event))))
    if (output.isTTY) {
      yield* Effect.forkScoped(
        Effect.forever(Effect.zipRight(Effect.sleep("100 millis"), Effect.sync(() => dirty && draw())))
      )
    }
    return {
      finish: Effect.gen(function*() {
        // The load is complete, so every file's last event (done or cached) is
        // published: wait (a second at most) until the consumer has seen them.
        yield* Effect.sleep("5 millis").pipe(
          Effect.repeat({ until: () => [...files.values()].every((file) => file.phase !== "fetching") }),
          Effect.timeout("1 second"),
          Effect.ignore
        )
        yield* Fiber.interrupt(consumer)
        if (output.isTTY && files.size > 0) {
          clear()
          if ([...files.values()].some((file) => file.phase !== "cached")) draw()
        }
      })
    }
  })
