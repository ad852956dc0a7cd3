from mgpu_client.main import main

main()
