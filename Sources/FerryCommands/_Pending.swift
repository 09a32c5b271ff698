import ArgumentParser
struct ResendCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "resend") }
struct ServeCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "serve") }
