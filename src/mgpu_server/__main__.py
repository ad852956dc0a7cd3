from mgpu_server.cli import main

main()
