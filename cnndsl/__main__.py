from cnndsl.cli.main import main

main()
