from mshale_fl.cli import main

main()
