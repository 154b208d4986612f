import ArgumentParser

reexecutedUnderPreloadIfNeeded()
EmulatorCommand.main()
