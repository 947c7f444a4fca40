from sipload.cli import main

main()
