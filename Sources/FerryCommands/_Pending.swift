import ArgumentParser
struct ResendCommand: ParsableCommand { static let configuration = CommandConfiguration(commandName: "resend") }
