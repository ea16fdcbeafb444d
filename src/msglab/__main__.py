from msglab.cli import main

main()
