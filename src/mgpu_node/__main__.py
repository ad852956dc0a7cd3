from mgpu_node.cli import main

main()
