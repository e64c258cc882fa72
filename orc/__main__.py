from orc.cli import main

main()
