from jupycron.cli import main

main()
