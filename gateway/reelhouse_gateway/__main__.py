from reelhouse_gateway.cli import main

main()
