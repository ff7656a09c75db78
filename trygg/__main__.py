from composition.cli import main

main()
