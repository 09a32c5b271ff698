import FerryCommands

Ferry.mainWithArguments()
