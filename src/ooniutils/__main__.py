from ooniutils.cli import main

main()
