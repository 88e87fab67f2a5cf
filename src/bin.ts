#!/usr/bin/env node
/**
 * The `mlup-storage` binary: `Cli.run` on Node, with the exit code it
 * returns (130 when interrupted by SIGINT, 143 by SIGTERM).
 *
 * @since 0.3.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Cli from "./Cli.js"
import * as NodeStorage from "./NodeStorage.js"

// Colours only for a terminal, and never with NO_COLOR (https://no-color.org).
const noColor = (process.env["NO_COLOR"] ?? "") !== ""
const colors = { stdout: process.stdout.isTTY === true && !noColor, stderr: process.stderr.isTTY === true && !noColor }

// Logs go to stderr (stdout holds the result); the progress view replaces the
// library's own progress lines, so only warnings and errors are logged.
const logging = Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true, colors: colors.stderr })).pipe(
  Layer.merge(Logger.minimumLogLevel(LogLevel.Warning))
)

// @effect/cli styles its help and errors: the styles go where colours do not.
const plain = (text: unknown, keep: boolean) => (keep || typeof text !== "string" ? text : Cli.stripAnsi(text))
const withPlainOutput = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Console.consoleWith((console) =>
    Effect.withConsole(self, {
      ...console,
      log: (...args) => console.log(...args.map((arg) => plain(arg, colors.stdout))),
      info: (...args) => console.info(...args.map((arg) => plain(arg, colors.stdout))),
      error: (...args) => console.error(...args.map((arg) => plain(arg, colors.stderr))),
      warn: (...args) => console.warn(...args.map((arg) => plain(arg, colors.stderr)))
    })
  )

// Which signal interrupted the run (runMain handles both alike): 130 for SIGINT, 143 for SIGTERM.
let signal: "SIGINT" | "SIGTERM" | undefined
process.once("SIGINT", () => (signal ??= "SIGINT"))
process.once("SIGTERM", () => (signal ??= "SIGTERM"))

Cli.run(process.argv).pipe(
  withPlainOutput,
  Effect.provide(Layer.mergeAll(NodeContext.layer, NodeStorage.layer, logging)),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    disablePrettyLogger: true,
    teardown: (exit, onExit) =>
      onExit(
        Exit.isSuccess(exit)
          ? exit.value as number
          : Cause.isInterruptedOnly(exit.cause)
          ? (signal === "SIGTERM" ? Cli.ExitCode.Terminated : Cli.ExitCode.Interrupted)
          : Cli.ExitCode.Failure
      )
  })
)
